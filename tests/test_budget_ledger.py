"""The budget ledger as the plugin really keeps it: SQLite, reservations taken atomically.

Whatever the interleaving of job starts (automatic or manual, from several threads) and
job ends, fees spent in the last 24 h plus fees still reserved never pass the limit.
"""
import os
import tempfile
import threading

from hypothesis import given, settings, strategies as st

from modules.budget import budget_rule
from modules.database import Database

LIMIT_MSAT = 5_000_000
DAY = 86400

operations = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(400_000, 3_000_000)),
    st.tuples(st.just("end"), st.integers(0, 50), st.floats(0, 1)),
    st.tuples(st.just("wait"), st.integers(1, 2 * DAY)),
), max_size=60)


def job(n):
    return {"scid": f"{n}x1x0", "amount_msat": 10**9, "chunk_sats": 100_000, "max_ppm": 500,
            "candidates": ["9x9x9"], "target": 0.5}


def committed_msat(db, now):
    spent, reserved = db.budget_usage(now)
    return spent + reserved


@settings(max_examples=150, deadline=None)
@given(operations)
def test_spent_plus_reserved_never_passes_the_limit(ops):
    with tempfile.TemporaryDirectory() as d:
        db = Database(os.path.join(d, "r.db"))
        db.migrate()
        fits = budget_rule(LIMIT_MSAT)
        now = 1_700_000_000.0
        open_jobs = []
        for op in ops:
            if op[0] == "reserve":
                job_id = db.start_job_reserving(job(len(open_jobs)), op[1], fits, now)
                if job_id is not None:
                    open_jobs.append((job_id, op[1]))
            elif op[0] == "end" and open_jobs:
                job_id, reserved = open_jobs.pop(op[1] % len(open_jobs))
                db.end_job(job_id, "done", "test", 0, int(reserved * op[2]), 0, now)   # cost <= reservation
            elif op[0] == "wait":
                now += op[1]
            assert committed_msat(db, now) <= LIMIT_MSAT
        db.close()


def test_concurrent_reservations_cannot_share_the_same_headroom(tmp_path):
    db = Database(str(tmp_path / "r.db"))
    db.migrate()
    fits = budget_rule(LIMIT_MSAT)
    granted = []
    barrier = threading.Barrier(8)

    def reserve(n):
        barrier.wait()
        if db.start_job_reserving(job(n), 2_000_000, fits, 1_700_000_000.0) is not None:
            granted.append(n)

    threads = [threading.Thread(target=reserve, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 2                       # 2 x 2 000 sat fit in 5 000 sat; a third does not
    assert committed_msat(db, 1_700_000_000.0) == 4_000_000
