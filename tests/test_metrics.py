"""The fees-earned counters' cache (modules/metrics.py EarnedTotals): the whole history is
summed once, hours are closed into it as time passes, the open hours read at each scrape;
each forward counts once, and the totals are the database's."""
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
    earned = EarnedTotals()
    assert read(earned, db, NOW, "running") == earned_by_sql(db)
    assert sum(earned_by_sql(db).values()) == sum(100 + i for i in range(50))
    db.store_forwards([make_forward(htlc=100, out_channel="9x9x0", fee_msat=5_000, t=NOW + 60)])
    assert read(earned, db, NOW + 61, "running") == earned_by_sql(db)       # no rebase needed


def test_hours_closed_as_time_passes_are_counted_once(tmp_path):
    db = open_db(tmp_path)
    earned = EarnedTotals(open_hours=2)
    db.store_forwards([make_forward(htlc=1, fee_msat=1_000, t=NOW - 40 * HOUR)])
    assert read(earned, db, NOW, "running") == {"2x2x0": 1_000}
    db.store_forwards([make_forward(htlc=2, fee_msat=200, t=NOW + 10)])
    for hours in range(1, 6):   # the new forward's hour leaves the open range, into the base
        db.store_forwards([make_forward(htlc=10 + hours, fee_msat=1, t=NOW + hours * HOUR)])
        assert read(earned, db, NOW + hours * HOUR + 20, "running") == {"2x2x0": 1_200 + hours}
    assert read(earned, db, NOW + 5 * HOUR + 30, "running") == earned_by_sql(db)


def test_a_phase_change_sums_the_whole_history_again(tmp_path):
    db = open_db(tmp_path)
    earned = EarnedTotals(open_hours=2)
    assert read(earned, db, NOW, "hydrating") == {}
    db.store_forwards([make_forward(htlc=i, fee_msat=10, t=NOW - 100 * HOUR + i) for i in range(5)])
    assert read(earned, db, NOW + 1, "hydrating") == {}   # hydration fills old hours: seen at its end
    assert read(earned, db, NOW + 2, "running") == {"2x2x0": 50}
