"""The daily budget rules (modules/budget.py) and the wallet reserve check."""
import pytest
from hypothesis import given, settings, strategies as st

from modules.budget import (RESERVED, SPENT, WINDOW_SECONDS, BudgetEntry, budget_rule, budget_status,
                            can_reserve, prune, reconcile, reservation_fits, reserve, wallet_reserve_ok)
from modules.config import default_config

NOW = 1_700_000_000
HOUR = 3600
LIMIT = 5_000_000   # 5000 sat


def test_status_counts_spent_within_24h_and_every_reservation():
    entries = [BudgetEntry(SPENT, 1_000_000, NOW - 2 * HOUR, "a"),
               BudgetEntry(SPENT, 700_000, NOW - WINDOW_SECONDS, "old"),      # just out of the window
               BudgetEntry(RESERVED, 500_000, NOW - 30 * HOUR, "b"),          # reservations never age out
               BudgetEntry(RESERVED, 250_000, NOW, "c")]
    assert budget_status(entries, LIMIT, NOW) == (1_000_000, 750_000, 3_250_000)
    status = budget_status(entries, 1_000_000, NOW)
    assert status.available_msat == 0 and status.spent_24h_msat == 1_000_000


def test_can_reserve_refuses_what_does_not_fit_and_says_why():
    entries = [BudgetEntry(SPENT, 4_000_000, NOW - HOUR, "a")]
    assert can_reserve(entries, LIMIT, 1_000_000, NOW)[0]
    ok, reason = can_reserve(entries, LIMIT, 1_000_001, NOW)
    assert not ok and "budget exhausted" in reason and "available 1000 sat" in reason
    assert not can_reserve([], LIMIT, 0, NOW)[0]
    assert not can_reserve([], 0, 1, NOW)[0]
    assert can_reserve(entries, LIMIT, 5_000_000, NOW + WINDOW_SECONDS - HOUR + 1)[0]   # spent aged out


def test_the_rule_on_totals_is_the_one_the_database_uses():
    fits = budget_rule(LIMIT)
    assert fits(3_000_000, 1_000_000, 1_000_000) and not fits(3_000_000, 1_000_000, 1_000_001)
    assert reservation_fits(0, 0, LIMIT, LIMIT) == can_reserve([], LIMIT, LIMIT, NOW)
    assert not fits(LIMIT + 1, 0, 1)   # over-spent (a job that cost more than reserved): nothing fits


def test_reserve_then_reconcile_replaces_the_reservation_with_the_actual_cost():
    entries, ok, _ = reserve([], LIMIT, "job1", 2_000_000, NOW)
    assert ok and entries == [BudgetEntry(RESERVED, 2_000_000, NOW, "job1")]
    again, ok, reason = reserve(entries, LIMIT, "job1", 1_000, NOW)
    assert not ok and again == entries and "already" in reason
    done = reconcile(entries, "job1", 300_000, NOW + HOUR)
    assert done == [BudgetEntry(SPENT, 300_000, NOW + HOUR, "job1")]
    assert budget_status(done, LIMIT, NOW + HOUR) == (300_000, 0, 4_700_000)
    assert reconcile(done, "job1", 300_000, NOW + 2 * HOUR) == done          # no double count
    orphan = reconcile([], "lost", 100_000, NOW)                              # no reservation: still spent
    assert orphan == [BudgetEntry(SPENT, 100_000, NOW, "lost")]
    with pytest.raises(ValueError):
        reconcile(entries, "job1", -1, NOW)


def test_a_late_reconciliation_counts_from_when_it_was_reconciled():
    # The fees were paid just before reconciliation: they must block the next 24 h from then,
    # not from when the job reserved (which would let a new job spend the limit again).
    entries, _, _ = reserve([], LIMIT, "slow", LIMIT, NOW)
    entries = reconcile(entries, "slow", LIMIT, NOW + 23 * HOUR)
    assert not can_reserve(entries, LIMIT, 1, NOW + 25 * HOUR)[0]
    assert can_reserve(entries, LIMIT, LIMIT, NOW + 47 * HOUR + 1)[0]


def test_prune_keeps_reservations_and_recent_spending():
    entries = [BudgetEntry(SPENT, 1, NOW - 25 * HOUR, "a"), BudgetEntry(SPENT, 2, NOW - HOUR, "b"),
               BudgetEntry(RESERVED, 3, NOW - 100 * HOUR, "c")]
    assert prune(entries, NOW) == entries[1:]


def test_entries_refuse_unknown_kinds_and_negative_amounts():
    with pytest.raises(ValueError):
        BudgetEntry("pending", 1, NOW, "x")
    with pytest.raises(ValueError):
        BudgetEntry(SPENT, -1, NOW, "x")


def test_wallet_reserve():
    config = default_config(min_wallet_reserve_sats=1_000_000)
    assert wallet_reserve_ok(400_000_000, 600_000_000, config)[0]
    ok, reason = wallet_reserve_ok(400_000_000, 500_000_000, config)
    assert not ok and "900000 sat < minimum 1000000 sat" in reason


# --- property: the budget is never exceeded --------------------------------------------
operation = st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 100)),                     # percent of the limit
    st.tuples(st.just("reconcile"), st.integers(0, 50), st.sampled_from([0, 0.5, 1]) | st.floats(0, 1)),
    st.tuples(st.just("advance"), st.sampled_from([1, HOUR, 12 * HOUR, 23 * HOUR, WINDOW_SECONDS - 1,
                                                    WINDOW_SECONDS, 25 * HOUR])
              | st.integers(0, 30 * HOUR)))


@settings(max_examples=1000, deadline=None)
@given(ops=st.lists(operation, max_size=60), limit=st.integers(1, 5_000_000))
def test_budget_is_never_exceeded_under_any_interleaving(ops, limit):
    now = NOW
    entries = []
    jobs = {}          # job_id -> [reserved at, reserved msat, reconciled at or None, actual msat]
    checkpoints = []
    for op in ops:
        if op[0] == "advance":
            now += op[1]
        elif op[0] == "reserve":
            job_id, amount = f"job{len(jobs)}", max(1, limit * op[1] // 100)
            ok, _ = can_reserve(entries, limit, amount, now)
            if ok:                                  # apply only what the rule allows
                entries, done, _ = reserve(entries, limit, job_id, amount, now)
                assert done
                jobs[job_id] = [now, amount, None, None]
                checkpoints.append(now)
        else:
            open_jobs = sorted(j for j, v in jobs.items() if v[2] is None)
            if open_jobs:
                job_id = open_jobs[op[1] % len(open_jobs)]
                actual = int(jobs[job_id][1] * op[2])   # sling's max ppm keeps it <= the reservation
                entries = reconcile(entries, job_id, actual, now)
                jobs[job_id][2:] = [now, actual]
        spent, reserved, available = budget_status(entries, limit, now)
        assert spent + reserved <= limit and available == limit - spent - reserved
        assert reserved == sum(v[1] for v in jobs.values() if v[2] is None)
    # Strong form: a job pays its fees somewhere between reservation and reconciliation.
    # Over any 24 h window, all jobs that could have paid inside it cost at most the limit.
    # (The sum only grows when a job is reserved, so windows ending there are the ones to check.)
    for end in checkpoints:
        exposure = sum(v[3] if v[2] is not None else v[1] for v in jobs.values()
                       if v[0] <= end and (v[2] is None or v[2] > end - WINDOW_SECONDS))
        assert exposure <= limit
