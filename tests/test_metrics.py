"""The fees-earned counter's cache (modules/metrics.py EarnedTotals): the whole history is
summed once per interval, the recent hours on every scrape; the sum is always the database's."""
from modules.metrics import EarnedTotals
from test_database import make_forward, open_db

HOUR = 3600
NOW = 1_700_000_000 // HOUR * HOUR + 1800


def earned_by_sql(db):
    return dict(db._conn().execute("SELECT out_channel, SUM(fee_msat) FROM forwards GROUP BY out_channel"))


def read(earned, db, now, phase):
    """What it says, less the channels that only ever carried forwards in (0 earned)."""
    return {scid: msat for scid, msat in earned.read(db, now, phase).items() if msat}


def test_the_totals_cover_the_whole_history_and_new_forwards_at_once(tmp_path):
    db = open_db(tmp_path)
    db.store_forwards([make_forward(htlc=i, out_channel=f"{2 + i % 3}x2x0", fee_msat=100 + i, t=NOW - i * 7 * HOUR)
                       for i in range(50)])
    earned = EarnedTotals(rebase_seconds=HOUR)
    assert read(earned, db, NOW, "running") == earned_by_sql(db)
    assert sum(earned_by_sql(db).values()) == sum(100 + i for i in range(50))
    db.store_forwards([make_forward(htlc=100, out_channel="9x9x0", fee_msat=5_000, t=NOW + 60)])
    assert read(earned, db, NOW + 61, "running") == earned_by_sql(db)       # no rebase needed


def test_a_late_row_in_an_old_hour_counts_from_the_next_rebase(tmp_path):
    db = open_db(tmp_path)
    db.store_forwards([make_forward(htlc=1, fee_msat=1_000, t=NOW - 40 * HOUR)])
    earned = EarnedTotals(rebase_seconds=HOUR)
    assert read(earned, db, NOW, "running") == {"2x2x0": 1_000}
    db.store_forwards([make_forward(htlc=2, fee_msat=7_000, t=NOW - 30 * HOUR)])
    assert read(earned, db, NOW + 10, "running") == {"2x2x0": 1_000}       # behind, never ahead
    assert read(earned, db, NOW + HOUR, "running") == {"2x2x0": 8_000}


def test_the_end_of_hydration_rebases_at_once(tmp_path):
    db = open_db(tmp_path)
    earned = EarnedTotals(rebase_seconds=HOUR)
    assert read(earned, db, NOW, "hydrating") == {}
    db.store_forwards([make_forward(htlc=i, fee_msat=10, t=NOW - 100 * HOUR + i) for i in range(5)])
    assert read(earned, db, NOW + 1, "hydrating") == {}
    assert read(earned, db, NOW + 2, "running") == {"2x2x0": 50}
