"""The budget ledger as the plugin keeps it: SQLite (modules/database.py), the rule of
modules/budget.py, reservations taken atomically, rebuilt from sling's stats when lost.

Whatever the interleaving of job starts (automatic or manual, from several threads), job
ends and lost databases, the fees really paid in any 24 hours never pass the limit.
"""
import atexit
import os
import shutil
import tempfile
import threading

from hypothesis import given, settings, strategies as st

from modules.budget import budget_rule, outside_spend
from modules.database import BUDGET_WINDOW_SECONDS, Database

# Many small databases: on a RAM disk where there is one (SQLite syncs each commit).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
LIMIT_MSAT = 5_000_000
HOUR = 3600
DAY = 86400
START = 1_700_000_000.0


def job(n):
    return {"scid": f"{n}x1x0", "amount_msat": 10**9, "chunk_sats": 100_000, "max_ppm": 500,
            "candidates": ["9x9x9"], "target": 0.5}


def committed_msat(db, now):
    spent, reserved = db.budget_usage(now)
    return spent + reserved


_TEMPLATE = []


def new_db(directory, n):
    """An empty, migrated database (a copy of one made once: examples run by the hundred)."""
    if not _TEMPLATE:
        _TEMPLATE.append(tempfile.mkdtemp(dir=SCRATCH))
        atexit.register(shutil.rmtree, _TEMPLATE[0], True)
        template = Database(os.path.join(_TEMPLATE[0], "template.db"))
        template.migrate()
        template.close()
    path = os.path.join(directory, f"ledger{n}.db")
    shutil.copyfile(os.path.join(_TEMPLATE[0], "template.db"), path)
    return Database(path)


# The values where a wrong rule shows: whole, half and third budgets, costs at the
# reservation, steps around 24 h; and a few others.
ledger_operations = [
    st.tuples(st.just("reserve"), st.sampled_from([100, 50, 34, 7])),                  # % of the limit
    st.tuples(st.just("reserve_rest"), st.sampled_from([0, 1])),     # what is left, or 1 msat more
    st.tuples(st.just("end"), st.integers(0, 3), st.sampled_from([1.0, 0.5, 0.0, 0.9])),  # which, cost share
    st.tuples(st.just("advance"), st.sampled_from([1, HOUR, 5 * HOUR, 23 * HOUR, DAY - 1, DAY, DAY + 1,
                                                   25 * HOUR])),
]
lose_database = st.tuples(st.just("lose_database"))


def run_ledger(ops):
    """Each job pays its whole cost at its end: the latest it can pay, the worst case for
    every later window (paying earlier only moves money into windows the ledger already
    covered with the reservation). A lost database is replaced by an empty one at once and
    rebuilt as the plugin does: sling's stats give each channel's cost and last rebalance
    (each job on its own channel); jobs open then are stopped, having paid in full.
    Returns the payments: (time, msat) that really left the wallet."""
    fits = budget_rule(LIMIT_MSAT)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        db, dbs = new_db(d, 0), 1
        now = START
        open_jobs = {}                    # db job id -> (reserved at, reserved msat)
        payments = []
        for op in ops:
            if op[0].startswith("reserve"):
                amount = (max(1, LIMIT_MSAT - committed_msat(db, now) + op[1]) if op[0] == "reserve_rest"
                          else max(1, LIMIT_MSAT * op[1] // 100))
                job_id = db.start_job_reserving(job(len(payments)), amount, fits, now)
                if job_id is not None:
                    open_jobs[job_id] = (now, amount)
            elif op[0] == "end" and open_jobs:
                job_id = sorted(open_jobs)[op[1] % len(open_jobs)]
                reserved_at, amount = open_jobs.pop(job_id)
                cost = int(amount * op[2])                     # sling-once: never above the reservation
                db.end_job(job_id, "done", "test", 0, cost, 0, now)
                payments.append((now, cost))
            elif op[0] == "advance":
                now += op[1]
            elif op[0] == "lose_database":
                for reserved_at, amount in open_jobs.values():   # hygiene stops them: they paid
                    payments.append((now, amount))
                open_jobs.clear()
                db.close()
                db, dbs = new_db(d, dbs), dbs + 1
                spends = [(f"{i}x1x0", cost, paid_at) for i, (paid_at, cost) in enumerate(payments) if cost]
                counted, _ = outside_spend(spends, [], LIMIT_MSAT, BUDGET_WINDOW_SECONDS, now)
                if counted:
                    db.record_outside_spend(counted, now)
            assert committed_msat(db, now) <= LIMIT_MSAT
        db.close()
    return payments


def assert_no_24_hours_pay_more_than_the_limit(payments):
    for end, _ in payments:               # the heaviest 24 h windows end at a payment
        assert sum(msat for t, msat in payments if end - DAY < t <= end) <= LIMIT_MSAT


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.one_of(*ledger_operations), max_size=12))
def test_fees_paid_in_any_24_hours_never_pass_the_limit(ops):
    assert_no_24_hours_pay_more_than_the_limit(run_ledger(ops))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(*ledger_operations, lose_database), max_size=16))
def test_nor_across_a_lost_database(ops):
    assert_no_24_hours_pay_more_than_the_limit(run_ledger(ops))


def test_concurrent_reservations_cannot_share_the_same_headroom(tmp_path):
    db = new_db(str(tmp_path), 0)
    fits = budget_rule(LIMIT_MSAT)
    granted = []
    barrier = threading.Barrier(8)

    def reserve(n):
        barrier.wait()
        if db.start_job_reserving(job(n), 2_000_000, fits, START) is not None:
            granted.append(n)

    threads = [threading.Thread(target=reserve, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 2                       # 2 x 2 000 sat fit in 5 000 sat; a third does not
    assert committed_msat(db, START) == 4_000_000


def test_a_reservation_holds_until_reconciled_and_the_cost_counts_24_h_from_then(tmp_path):
    db = new_db(str(tmp_path), 0)
    fits = budget_rule(LIMIT_MSAT)
    slow = db.start_job_reserving(job(1), LIMIT_MSAT, fits, START)
    assert db.budget_usage(START + 30 * HOUR) == (0, LIMIT_MSAT)      # reservations never age out
    db.end_job(slow, "done", "test", 0, LIMIT_MSAT, 0, START + 23 * HOUR)
    # paid just before it ended: it blocks the 24 h from then, not from its reservation
    assert db.start_job_reserving(job(2), 1, fits, START + 47 * HOUR - 1) is None
    assert db.budget_usage(START + 47 * HOUR) == (0, 0)
    assert db.start_job_reserving(job(3), LIMIT_MSAT, fits, START + 47 * HOUR) is not None


def test_a_job_is_charged_what_it_is_told_to_be_charged(tmp_path):
    db = new_db(str(tmp_path), 0)
    job_id = db.start_job_reserving(job(1), 3_000_000, budget_rule(LIMIT_MSAT), START)
    db.end_job(job_id, "blind", "test", 0, 1_000, 0, START, charged_msat=3_000_000)
    assert db.budget_usage(START) == (3_000_000, 0)
    assert db.recent_jobs()[0]["fee_paid_msat"] == 1_000                 # the job's own figure stays


def test_spend_counted_from_sling_stats_lasts_24_h_and_never_collides_with_jobs(tmp_path):
    db = new_db(str(tmp_path), 0)
    assert db.ledger_is_empty()
    assert db.record_outside_spend(2_000_000, START) == -1
    assert db.record_outside_spend(500_000, START + HOUR) == -2
    assert not db.ledger_is_empty()
    job_id = db.start_job_reserving(job(1), 2_500_000, budget_rule(LIMIT_MSAT), START + HOUR)
    assert job_id == 1
    assert db.start_job_reserving(job(2), 1, budget_rule(LIMIT_MSAT), START + HOUR) is None
    assert db.outside_spend(START + HOUR) == (2_500_000, START + HOUR)
    assert db.outside_spend(START + DAY) == (500_000, START + HOUR)        # the first one expired
    assert db.budget_usage(START + DAY + HOUR) == (0, 2_500_000)
