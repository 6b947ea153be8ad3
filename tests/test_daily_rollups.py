"""The daily rollups and the reads revenue-report makes (modules/database.py).

flow_daily is rolled from flow_hourly once a day closes; a day that gets new forwards after
its roll is stale until rolled again. The report's read must be exact in every state, and
the days must outlive the forwards and hourly rows they came from."""
import random
import sqlite3

from modules.database import MIGRATIONS, Database
from modules.models import Forward, FlowTotals
from test_database import make_forward

DAY = 86400
NOW = 1_700_000_000 + 13 * 3600 + 5      # 13:00:05 UTC
TODAY = NOW // DAY
CHANNELS = ["1x1x0", "2x1x0", "3x1x0", "4x1x0"]


def open_db(tmp_path, name="r.db"):
    db = Database(str(tmp_path / name))
    db.migrate()
    return db


def failed(in_channel, htlc, out_channel, in_msat, t, failcode=4103):
    return Forward(in_channel, htlc, out_channel, in_msat, 0, 0, "local_failed", t, None, None, None, failcode)


def history(n, days, seed=1, first_htlc=0):
    """Settled and local_failed forwards spread over the `days` before NOW."""
    rng = random.Random(seed)
    forwards = []
    for i in range(first_htlc, first_htlc + n):
        a, b = rng.sample(CHANNELS, 2)
        t = NOW - rng.uniform(0, days * DAY)
        if rng.random() < 0.15:
            forwards.append(failed(a, i, b, rng.randint(1000, 10**9), t, rng.choice([4103, 4103, 4107])))
        else:
            out = rng.randint(1000, 10**9)
            forwards.append(make_forward(a, i, b, out, out // 1000 + rng.randint(0, 50), t))
    return forwards


def truth(forwards, since):
    """Each channel's totals from the forwards themselves, from the hour holding `since`."""
    start = -1 if since is None else int(since) // 3600 * 3600
    sums = {}

    def add(scid, **kw):
        row = sums.setdefault(scid, dict.fromkeys(("in_msat", "out_msat", "fees_earned_msat", "in_count",
                                                   "out_count", "unmet_count", "unmet_msat"), 0))
        for key, value in kw.items():
            row[key] += value
    for f in forwards:
        if f.status == "settled" and f.resolved_time >= start:
            add(f.out_channel, out_msat=f.out_msat, fees_earned_msat=f.fee_msat, out_count=1)
            add(f.in_channel, in_msat=f.in_msat, in_count=1)
        elif f.status == "local_failed" and f.failcode == 4103 and f.received_time >= start:
            add(f.out_channel, unmet_count=1, unmet_msat=f.in_msat)
    return {scid: FlowTotals(scid, **row) for scid, row in sums.items()}


def first_day(forwards):
    return min(int(f.resolved_time or f.received_time) for f in forwards) // DAY


def windows():
    return [None] + [NOW - d * DAY for d in (1, 7, 30, 45)]


def assert_exact(db, forwards):
    for since in windows():
        assert db.report_flow(since) == truth(forwards, since), f"since {since}"


def test_the_report_read_is_exact_before_and_after_a_roll_and_with_stale_days(tmp_path):
    db = open_db(tmp_path)
    forwards = history(3000, 60)
    db.store_forwards(forwards)
    assert_exact(db, forwards)                       # nothing rolled: all from the hours
    assert db.roll_days(NOW) == TODAY - first_day(forwards)    # the first forward's day up to yesterday
    assert db.get_mark("daily_rolled_until") == TODAY and db.get_mark("daily_stale_from") is None
    assert_exact(db, forwards)
    late = history(400, 50, seed=2, first_htlc=10_000)   # forwards read late into rolled days
    db.store_forwards(late)
    forwards += late
    assert db.get_mark("daily_stale_from") == first_day(late)
    assert_exact(db, forwards)                       # stale days come from the hours
    assert db.roll_days(NOW) > 0 and db.get_mark("daily_stale_from") is None
    assert_exact(db, forwards)
    assert db.roll_days(NOW) == 0                    # nothing left to roll


def test_a_roll_before_any_forward_leaves_later_history_exact(tmp_path):
    db = open_db(tmp_path)
    assert db.roll_days(NOW) == 0 and db.get_mark("daily_rolled_until") == TODAY   # hydration not begun
    forwards = history(300, 20)
    db.store_forwards(forwards)
    assert db.get_mark("daily_stale_from") == first_day(forwards)
    assert_exact(db, forwards)
    assert db.roll_days(NOW) == TODAY - first_day(forwards)
    assert_exact(db, forwards)


def test_today_is_rolled_once_it_has_closed(tmp_path):
    db = open_db(tmp_path)
    forwards = [make_forward("1x1x0", 0, "2x1x0", 10**6, 7, NOW - 60)]
    db.store_forwards(forwards)
    assert db.roll_days(NOW) == 0 and db.get_mark("daily_rolled_until") == TODAY
    assert db.roll_days(NOW + DAY) == 1
    rows = db._conn().execute("SELECT day, channel, out_msat, fee_msat FROM flow_daily").fetchall()
    assert sorted(rows) == [(TODAY, "1x1x0", 0, 0), (TODAY, "2x1x0", 10**6, 7)]
    assert db.report_flow(None) == truth(forwards, None)


def test_a_row_the_node_corrects_moves_its_day_too(tmp_path):
    db = open_db(tmp_path)
    live = make_forward("1x1x0", 5, "2x1x0", 10**6, 10, NOW - 20 * DAY)
    db.store_forwards([live])
    db.roll_days(NOW)
    page = make_forward("1x1x0", 5, "3x1x0", 2 * 10**6, 30, NOW - 3 * DAY, created=9, updated=9)
    db.store_forwards([page], authoritative=True)        # the node's record wins
    assert db.get_mark("daily_stale_from") == (NOW - 20 * DAY) // DAY
    assert db.report_flow(None) == truth([page], None)
    db.roll_days(NOW)
    assert db.report_flow(None) == truth([page], None)
    assert db.report_flow(NOW - 7 * DAY) == truth([page], NOW - 7 * DAY)


def test_the_whole_history_outlives_its_forwards_and_hourly_rows(tmp_path):
    db = open_db(tmp_path)
    forwards = history(2000, 400)
    db.store_forwards(forwards)
    db.roll_days(NOW)
    lifetime = db.report_flow(None)
    conn = db._conn()            # what a retention pruner would do: old forwards and hours gone
    conn.execute("DELETE FROM forwards WHERE timestamp < ?", (TODAY * DAY,))
    conn.execute("DELETE FROM failed_forwards WHERE received_time < ?", (TODAY * DAY,))
    conn.execute("DELETE FROM flow_hourly WHERE hour < ?", (TODAY * 24,))
    assert db.report_flow(None) == lifetime == truth(forwards, None)


def test_a_long_history_rolls_in_bounded_transactions(tmp_path):
    db = open_db(tmp_path)
    forwards = history(500, 200)
    db.store_forwards(forwards)
    statements = []
    db._conn().set_trace_callback(statements.append)
    assert db.roll_days(NOW) == TODAY - first_day(forwards) == 200
    rolls = [s for s in statements if s.startswith("DELETE FROM flow_daily")]
    assert len(rolls) == 29 == sum(1 for s in statements if s.startswith("BEGIN IMMEDIATE")) - 1   # 7 days each


def test_the_report_reads_use_the_primary_keys(tmp_path):
    db = open_db(tmp_path)
    plan = " | ".join(db.explain(
        "SELECT * FROM flow_hourly WHERE hour >= ? AND hour < ? UNION ALL SELECT * FROM flow_hourly"
        " WHERE hour >= ?", (1, 2, 3)))
    assert "SCAN" not in plan, plan
    from modules.database import _REPORT_FLOW
    plan = " | ".join(db.explain(_REPORT_FLOW, {"first_day": 1, "rolled_day": 2, "since_hour": 3}))
    assert "SCAN flow_hourly" not in plan and "SCAN flow_daily" not in plan, plan


def job(db, scid, moved_msat, fee_msat, started, ended=None, status="done", cost_known=True):
    job_id = db.start_job_reserving({"scid": scid, "amount_msat": moved_msat, "chunk_sats": 100_000,
                                     "max_ppm": 500, "candidates": [], "target": 0.5},
                                    10**9, lambda *a: True, started)
    db.mark_job_running(job_id)
    if ended is None:
        db.update_job_progress(job_id, moved_msat, fee_msat, 0)
    else:
        db.end_job(job_id, status, "test", moved_msat, fee_msat, 0, ended, cost_known=cost_known)
    return job_id


def test_rebalance_spend_counts_jobs_ended_in_the_window_and_the_running_ones(tmp_path):
    db = open_db(tmp_path)
    job(db, "1x1x0", 10**9, 100_000, NOW - 40 * DAY, NOW - 40 * DAY + 600)      # before the window
    job(db, "1x1x0", 2 * 10**9, 300_000, NOW - 31 * DAY, NOW - 29 * DAY)       # started before, ended in it
    job(db, "1x1x0", 5 * 10**8, 40_000, NOW - 3600)                            # still running: paid so far
    job(db, "2x1x0", 0, 0, NOW - DAY, NOW - DAY + 60, status="timeout")
    job(db, "2x1x0", 10**8, 5000, NOW - DAY, NOW - DAY + 60, status="blind", cost_known=False)
    spend = db.rebalance_spend_since(NOW - 30 * DAY)
    one, two = spend["1x1x0"], spend["2x1x0"]
    assert (one.jobs, one.moved_msat, one.fee_paid_msat, one.running, one.cost_unknown) == (2, 25 * 10**8, 340_000, 1, 0)
    assert (two.jobs, two.moved_msat, two.fee_paid_msat, two.running, two.cost_unknown) == (2, 10**8, 5000, 0, 1)
    lifetime = db.rebalance_spend_since(None)["1x1x0"]
    assert (lifetime.jobs, lifetime.fee_paid_msat) == (3, 440_000)


def test_migration_5_on_a_version_4_file_keeps_its_history_exact_and_marks_unknown_costs(tmp_path):
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    for statements in MIGRATIONS[:4]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO flow_hourly (hour, channel, out_msat, fee_msat, out_count) VALUES (?, '2x1x0', 5000, 7, 1)",
                 ((NOW - 10 * DAY) // 3600,))
    for reason in ("moved 100 sat of 100", "blind; its cost stayed unknown for 4 checks; charged the full reservation"):
        conn.execute("INSERT INTO rebalance_jobs (scid, started_at, ended_at, status, amount_msat, chunk_sats,"
                     " max_ppm, candidates_json, target, end_reason) VALUES ('2x1x0', 1, 2, 'done', 1, 1, 1, '[]', 0.5, ?)",
                     (reason,))
    conn.commit()
    conn.close()
    db = Database(path)
    assert db.migrate() == len(MIGRATIONS)
    assert db._conn().execute("SELECT cost_known FROM rebalance_jobs ORDER BY id").fetchall() == [(1,), (0,)]
    assert db.report_flow(None)["2x1x0"].fees_earned_msat == 7      # not rolled yet: from the hours
    db.roll_days(NOW)
    assert db.report_flow(None)["2x1x0"].fees_earned_msat == 7
    assert db.report_flow(NOW - 7 * DAY) == {}
