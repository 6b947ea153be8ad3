import json
import os
import sqlite3
import threading

from conftest import SAMPLES_DIR
from modules.database import Database
from modules.node import parse_forward


def sample(name):
    with open(os.path.join(SAMPLES_DIR, name)) as f:
        return json.load(f)


def make_forward(in_channel="1x1x0", htlc=0, out_channel="2x2x0", out_msat=1_000_000, fee_msat=100,
                 t=1_700_000_000.0, created=None, updated=None, status="settled"):
    return parse_forward({"in_channel": in_channel, "in_htlc_id": htlc, "out_channel": out_channel,
                          "in_msat": out_msat + fee_msat, "out_msat": out_msat, "fee_msat": fee_msat,
                          "status": status, "received_time": t - 1, "resolved_time": t,
                          "created_index": created, "updated_index": updated})


def open_db(tmp_path):
    db = Database(str(tmp_path / "revenue_ops.db"))
    db.migrate()
    return db


def test_migrations_run_once_and_record_the_version(tmp_path):
    db = open_db(tmp_path)
    assert db.schema_version() >= 1
    assert db.migrate() == db.schema_version()
    mode = db._conn().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_forward_seen_live_and_again_in_a_page_is_stored_once(tmp_path):
    db = open_db(tmp_path)
    events = sample("forward_event.json")
    live_settled = parse_forward(events[1])           # no created_index, no out_htlc_id
    assert db.store_forwards([parse_forward(events[0]), live_settled]) == 1  # offered is ignored
    page = [parse_forward(row) for row in sample("l2_listforwards.json")["forwards"]]
    assert db.store_forwards(page, {"created": 3}) == 1   # only created_index 2 is new
    assert db.forwards_count() == 2
    assert db.get_mark("created") == 3


def test_marks_only_move_up(tmp_path):
    db = open_db(tmp_path)
    db.store_forwards([], {"created": 10})
    db.store_forwards([], {"created": 4})
    assert db.get_mark("created") == 10


def test_flow_aggregation_returns_every_channel_since_a_time(tmp_path):
    db = open_db(tmp_path)
    day = 86400
    now = 1_700_000_000
    forwards = [
        make_forward("A", 0, "B", 1_000_000, 100, now - 1 * day),
        make_forward("A", 1, "C", 2_000_000, 300, now - 2 * day),
        make_forward("B", 0, "A", 500_000, 50, now - 3 * day),
        make_forward("A", 2, "B", 9_000_000, 900, now - 30 * day),  # outside the window
    ]
    db.store_forwards(forwards)
    flows = db.get_flow_aggregation(now - 7 * day)
    assert flows["A"].out_msat == 500_000 and flows["A"].in_msat == 1_000_100 + 2_000_300
    assert flows["A"].fees_earned_msat == 50 and flows["A"].in_count == 2 and flows["A"].out_count == 1
    assert flows["B"].out_msat == 1_000_000 and flows["B"].fees_earned_msat == 100
    assert flows["B"].in_msat == 500_050
    assert flows["C"].out_msat == 2_000_000 and flows["C"].in_count == 0
    exact = db.channel_volume_since("B", now - 7 * day)
    assert (exact.out_msat, exact.in_msat, exact.fees_earned_msat) == (1_000_000, 500_050, 100)


def test_rollups_match_the_raw_forwards_after_many_batches(tmp_path):
    db = open_db(tmp_path)
    now = 1_700_000_000
    for batch in range(5):
        db.store_forwards([make_forward("A", batch * 10 + i, "B", 1000 + i, i, now - i * 3600)
                           for i in range(10)])
        db.store_forwards([make_forward("A", batch * 10 + i, "B", 1000 + i, i, now - i * 3600)
                           for i in range(10)])  # replayed page adds nothing
    flows = db.get_flow_aggregation(now - 86400)
    exact = db.channel_volume_since("B", now - 86400 - 3600)
    assert flows["B"].out_msat == exact.out_msat == 5 * sum(1000 + i for i in range(10))
    assert flows["B"].out_count == 50


def test_queries_use_the_composite_indexes_not_a_table_scan(tmp_path):
    db = open_db(tmp_path)
    since = 1_700_000_000
    out_plan = " ".join(db.explain(db.CHANNEL_OUT_SQL, ("1x1x0", since)))
    in_plan = " ".join(db.explain(db.CHANNEL_IN_SQL, ("1x1x0", since)))
    or_plan = " ".join(db.explain(db.SPEC_OR_SQL, ("1x1x0", "1x1x0", since)))
    agg_plan = " ".join(db.explain(db.FLOW_AGGREGATION_SQL, (since // 3600,)))
    assert "USING INDEX idx_forwards_out_time (out_channel=? AND timestamp>?)" in out_plan
    assert "USING INDEX idx_forwards_in_time (in_channel=? AND timestamp>?)" in in_plan
    assert "idx_forwards_out_time" in or_plan and "idx_forwards_in_time" in or_plan
    assert "PRIMARY KEY (hour>?)" in agg_plan
    for plan in (out_plan, in_plan, or_plan, agg_plan):
        assert "SCAN forwards" not in plan and "SCAN flow_hourly" not in plan


def test_concurrent_writers_from_several_threads_lose_nothing(tmp_path):
    db = open_db(tmp_path)

    def writer(channel):
        for i in range(50):
            db.store_forwards([make_forward(channel, i, "Z", 1000, 1, 1_700_000_000 + i)])

    threads = [threading.Thread(target=writer, args=(f"{n}x1x0",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.forwards_count() == 200
    assert db.get_flow_aggregation(0)["Z"].out_count == 200
    db.close()


def test_the_hourly_rollups_kept_between_reads_always_equal_a_fresh_read(tmp_path):
    # the fee cycle reads the rollups every cycle and only the hours written since are read
    # again: after new forwards, late ones for old hours, a live row a page contradicts, a
    # refused forward and a window that moves on, it reads exactly what a fresh reader does
    db = open_db(tmp_path)
    t0 = 1_700_000_000.0
    htlc = iter(range(10_000))

    def fwd(hours_ago, channel="2x2x0", **kw):
        return make_forward(htlc=next(htlc), out_channel=channel, t=t0 - hours_ago * 3600, **kw)

    def fresh(since):
        other = Database(db.path)
        try:
            return other.hourly_flow_since(since)
        finally:
            other.close()

    db.store_forwards([fwd(h, channel=f"{2 + h % 3}x2x0") for h in range(0, 300, 7)])
    since = t0 - 200 * 3600
    assert db.hourly_flow_since(since) == fresh(since)
    db.store_forwards([fwd(0.2), fwd(0.1, channel="9x9x0")])                 # the hour under way
    db.store_forwards([fwd(150), fwd(190, out_msat=5_000_000)])              # late, hours ago
    db.store_forwards([fwd(3, status="local_failed")])                       # refused: unmet
    assert db.hourly_flow_since(since) == fresh(since)
    live = make_forward(in_channel="7x7x0", htlc=1, t=t0 - 120 * 3600)        # seen live...
    db.store_forwards([live])
    db.hourly_flow_since(since)
    page = make_forward(in_channel="7x7x0", htlc=1, out_msat=3_000_000, t=t0 - 119 * 3600, created=5)
    db.store_forwards([page], authoritative=True)                            # ...then a page differs
    assert db.hourly_flow_since(since) == fresh(since)
    later = since + 50 * 3600                                                # the window moves on
    assert db.hourly_flow_since(later) == fresh(later)
    earlier = since - 100 * 3600                                             # and back: read in full
    assert db.hourly_flow_since(earlier) == fresh(earlier)


def test_a_failed_read_of_the_rollups_is_read_again_in_full_next_time(tmp_path):
    db = open_db(tmp_path)
    t0 = 1_700_000_000.0
    db.store_forwards([make_forward(htlc=h, t=t0 - h * 3600) for h in range(0, 50, 5)])
    since = t0 - 100 * 3600
    db.hourly_flow_since(since)
    db.store_forwards([make_forward(htlc=999, out_channel="5x5x0", t=t0 - 30 * 3600)])
    real = db._hourly_rows
    db._hourly_rows = lambda hour: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error"))
    try:
        db.hourly_flow_since(since)
    except sqlite3.OperationalError:
        pass
    db._hourly_rows = real
    assert "5x5x0" in db.hourly_flow_since(since)      # the write it missed is not lost
