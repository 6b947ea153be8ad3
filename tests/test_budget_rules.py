"""The pure budget rules (modules/budget.py), what the ledger charges a job
(modules/job_manager.py) and how sling's figures are read (modules/node.py).

The ledger these rules serve is tested on the database itself: tests/test_budget_ledger.py.
"""
import time

from hypothesis import given, settings, strategies as st

from modules.budget import LOCAL_TIME_SLACK_SECONDS, budget_rule, outside_spend, reservation_fits, wallet_reserve_ok
from modules.config import default_config
from modules.job_manager import UNKNOWN, charge_msat, job_verdict
from modules.models import Channel
from modules.node import SlingTotals, sling_fee_bound_msat, parse_local_time
from simnode.sling import SimSling
from simnode.state import NodeState

NOW = 1_700_000_000
HOUR = 3600
DAY = 86400
LIMIT = 5_000_000   # 5000 sat


def test_the_rule_on_totals_and_why():
    fits = budget_rule(LIMIT)
    assert fits(3_000_000, 1_000_000, 1_000_000) and not fits(3_000_000, 1_000_000, 1_000_001)
    assert not fits(LIMIT + 1, 0, 1)   # over-spent (a job that cost more than reserved): nothing fits
    assert not fits(0, 0, 0) and not budget_rule(0)(0, 0, 1)
    ok, reason = reservation_fits(4_000_000, 0, 1_000_001, LIMIT)
    assert not ok and "budget exhausted" in reason and "available 1000 sat" in reason
    assert reservation_fits(0, 0, LIMIT, LIMIT)[0]


def test_wallet_reserve():
    config = default_config(min_wallet_reserve_sats=1_000_000)
    assert wallet_reserve_ok(400_000_000, 600_000_000, config)[0]
    ok, reason = wallet_reserve_ok(400_000_000, 500_000_000, config)
    assert not ok and "900000 sat < minimum 1000000 sat" in reason


# --- a lost ledger: what sling's stats say may have been spent -----------------------------
def test_a_fresh_node_is_not_blocked():
    assert outside_spend([], [], LIMIT, DAY, NOW)[0] == 0
    assert outside_spend([("1x1x1", 0, None)], [], LIMIT, DAY, NOW)[0] == 0       # no success at all
    old = NOW - DAY - LOCAL_TIME_SLACK_SECONDS - 1
    counted, reason = outside_spend([("1x1x1", 900_000, old)], [], LIMIT, DAY, NOW)
    assert counted == 0 and "no rebalance in the last 24 h" in reason


def test_rebalances_in_the_window_count_their_whole_stats_total_up_to_the_limit():
    recent = NOW - 23 * HOUR
    counted, reason = outside_spend([("1x1x1", 900_000, recent), ("2x2x2", 1_000, NOW - 40 * DAY),
                                     ("3x3x3", 100_000, NOW - DAY - HOUR // 2)], [], LIMIT, DAY, NOW)
    assert counted == 1_000_000 and "2 channels" in reason          # 24.5 h ago: within the DST slack
    assert outside_spend([("1x1x1", 9_000_000, recent)], [], LIMIT, DAY, NOW)[0] == LIMIT
    assert outside_spend([("1x1x1", 1, None)], [], LIMIT, DAY, NOW)[0] == 1      # time unreadable: counts


def test_stats_that_cannot_be_read_count_the_whole_budget():
    counted, reason = outside_spend([("1x1x1", 1_000, NOW)], ["2x2x2"], LIMIT, DAY, NOW)
    assert counted == LIMIT and "could not be read" in reason and "2x2x2" in reason


def test_sling_local_time_is_read_back():
    assert parse_local_time("Never") is None and parse_local_time(None) is None
    from simnode.sling import _when
    assert parse_local_time(_when(NOW)) == NOW


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 5000)), min_size=1, max_size=30))
def test_the_fee_bound_is_never_below_what_sling_paid(payments):
    """sling reports total_spent_sats from a floored weighted ppm, floored to sats (the
    simulator computes it as sling does): the bound undoes both, and stays close."""
    sling = SimSling(NodeState())
    rows = [{"amount_msat": chunks * 10_000_000, "fee_ppm": ppm, "channel_partner": "1x1x1", "hops": 3,
             "completed_at": int(time.time())} for chunks, ppm in payments]
    stats = sling._success_stats(rows)
    paid = sum(r["amount_msat"] * r["fee_ppm"] // 1_000_000 for r in rows)
    total = sum(r["amount_msat"] for r in rows)
    bound = sling_fee_bound_msat(stats)
    assert stats["total_spent_sats"] * 1000 <= paid <= bound
    assert bound <= paid + total // 1_000_000 + 2000


# --- what a job is charged, and when it is stopped ----------------------------------------
JOB = {"started_at": NOW, "amount_msat": 1_000_000_000, "chunk_sats": 100_000, "max_ppm": 500,
       "reserved_msat": 550_000, "target": 0.5}   # (1 000 000 + one chunk of 100 000) sat at 500 ppm


def channel(local_msat=1_000_000_000):
    return Channel("1x1x1", "02" + "aa" * 32, "CHANNELD_NORMAL", 10_000_000_000, local_msat, local_msat,
                   0, 0, 100, "local", 0, 483, True)


def test_a_job_is_charged_the_most_it_can_have_paid():
    assert charge_msat(JOB, SlingTotals(500_000_000, 49_000, 5, 0, fee_max_msat=50_500)) == 50_500
    assert charge_msat(JOB, SlingTotals(500_000_000, 49_000, 5, 0)) == 49_000
    # a payment sling stopped waiting for may still settle: charged at max ppm
    assert charge_msat(JOB, SlingTotals(500_000_000, 50_000, 5, 1, timeouts=1, fee_max_msat=50_000)) == 100_000
    assert charge_msat(JOB, SlingTotals(0, 0, 0, 0, reliable=False)) == 550_000


def test_the_verdicts():
    config = default_config(rebalance_job_timeout_minutes=60, futility_max_failures=10)
    going = SlingTotals(300_000_000, 30_000, 3, 0, fee_max_msat=30_000)
    assert job_verdict(JOB, going, channel(), config, NOW + 60) is None
    assert job_verdict(JOB, None, UNKNOWN, config, NOW + 60) is None               # blind: look again
    assert job_verdict(JOB, going, None, config, NOW)[0] == "closed"
    assert job_verdict(JOB, None, UNKNOWN, config, NOW + 3600)[0] == "timeout"
    assert job_verdict(JOB, SlingTotals(reliable=False), channel(), config, NOW)[0] == "stats_reset"
    assert job_verdict(JOB, SlingTotals(1_000_000_000, 100_000, 10, 0), channel(), config, NOW)[0] == "done"
    assert job_verdict(JOB, going, channel(5_000_000_000), config, NOW)[0] == "done"     # at target
    assert job_verdict(JOB, SlingTotals(0, 0, 0, 10), channel(), config, NOW)[0] == "stopped_failing"
    # 9 chunks paid at max ppm: 450 sat. With one timed-out payment (50 sat) the next one
    # (50 sat) still fits the 550 sat reservation; with two it could pass it.
    timed_out = SlingTotals(900_000_000, 450_000, 9, 1, timeouts=1, fee_max_msat=450_000)
    assert job_verdict(JOB, timed_out, channel(), config, NOW) is None
    timed_out = SlingTotals(900_000_000, 450_000, 9, 2, timeouts=2, fee_max_msat=450_000)
    assert job_verdict(JOB, timed_out, channel(), config, NOW)[0] == "budget"
