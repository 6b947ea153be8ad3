"""Live forward_event checks, and a listforwards row winning over a live one that differs."""
import json
import os
import sqlite3

import pytest

from conftest import SAMPLES_DIR
from modules.database import Database
from modules.forward_events import Rejected, check_forward_event
from modules.models import Forward
from modules.node import parse_forward


def sample(name):
    with open(os.path.join(SAMPLES_DIR, name)) as f:
        return json.load(f)


EVENTS = sample("forward_event.json")
SETTLED = EVENTS[1]


def test_every_event_core_lightning_sends_is_accepted():
    checked = [check_forward_event(e) for e in EVENTS]
    assert all(isinstance(c, Forward) for c in checked)
    assert [c.status for c in checked] == ["offered", "settled", "offered", "settled", "local_failed"]
    settled = checked[1]
    assert settled == parse_forward(SETTLED)        # the same Forward as the page parser makes
    local_failed = checked[4]
    assert local_failed.out_msat == 0 and local_failed.in_msat == 150000


def test_old_nodes_msat_strings_are_accepted():
    old = dict(SETTLED, in_msat="100002msat", out_msat="100000msat", fee_msat="2msat")
    old.pop("updated_index")
    forward = check_forward_event(old)
    assert isinstance(forward, Forward) and (forward.in_msat, forward.out_msat, forward.fee_msat) == (100002, 100000, 2)


def without(event, field):
    return {k: v for k, v in event.items() if k != field}


BAD_EVENTS = [
    ("in_msat", dict(SETTLED, in_msat=-5), "is negative"),
    ("in_msat", dict(SETTLED, in_msat=100002.5), "is not a whole number"),
    ("in_msat", dict(SETTLED, in_msat="lots"), "is not a whole number"),
    ("in_msat", dict(SETTLED, in_msat="-5msat"), "is not a whole number"),
    ("in_msat", dict(SETTLED, in_msat=True), "is not a whole number"),
    ("in_msat", without(SETTLED, "in_msat"), "is missing"),
    ("out_msat", without(SETTLED, "out_msat"), "is missing"),
    ("out_msat", dict(SETTLED, out_msat=-1), "is negative"),
    ("out_msat", dict(SETTLED, out_msat=200000), "exceeds in_msat"),
    ("fee_msat", dict(SETTLED, fee_msat=-2), "is negative"),
    ("fee_msat", dict(SETTLED, fee_msat=7), "is not in_msat - out_msat"),
    ("in_htlc_id", without(SETTLED, "in_htlc_id"), "is missing"),
    ("in_htlc_id", dict(SETTLED, in_htlc_id=-1), "is negative"),
    ("in_htlc_id", dict(SETTLED, in_htlc_id="0"), "is not a whole number"),
    ("status", dict(SETTLED, status="resolved"), "is unknown"),
    ("status", without(SETTLED, "status"), "is missing"),
    ("in_channel", dict(SETTLED, in_channel="103x1x0\n"), "is not a short channel id"),
    ("out_channel", without(SETTLED, "out_channel"), "is missing"),
    ("received_time", without(SETTLED, "received_time"), "is missing"),
    ("resolved_time", dict(SETTLED, resolved_time="soon"), "is not a unix time"),
    ("updated_index", dict(SETTLED, updated_index=-3), "is negative"),
]


@pytest.mark.parametrize("field,event,problem", BAD_EVENTS, ids=[f"{f}-{p}" for f, _, p in BAD_EVENTS])
def test_a_bad_field_is_named(field, event, problem):
    rejected = check_forward_event(event)
    assert isinstance(rejected, Rejected)
    assert rejected.field == field and problem in rejected.problem


def test_a_huge_value_is_not_repeated_whole():
    rejected = check_forward_event(dict(SETTLED, status="s" * 100_000))
    assert rejected.field == "status" and len(str(rejected)) < 120
    assert check_forward_event("nonsense").field == "forward_event"


# --- a page row wins over the live row ----------------------------------------------------------

def open_db(tmp_path):
    db = Database(str(tmp_path / "revenue_ops.db"))
    db.migrate()
    return db


def rollups_match_forwards(db):
    """flow_hourly holds exactly what the forwards add up to (zero rows left by a move aside)."""
    conn = sqlite3.connect(db.path)
    expected = {}
    for hour, channel, out_msat, fee_msat, count in conn.execute(
            "SELECT timestamp / 3600, out_channel, SUM(out_msat), SUM(fee_msat), COUNT(*) FROM forwards"
            " WHERE out_channel IS NOT NULL GROUP BY 1, 2"):
        expected[(hour, channel)] = [0, out_msat, fee_msat, 0, count]
    for hour, channel, in_msat, count in conn.execute(
            "SELECT timestamp / 3600, in_channel, SUM(in_msat), COUNT(*) FROM forwards GROUP BY 1, 2"):
        row = expected.setdefault((hour, channel), [0, 0, 0, 0, 0])
        row[0], row[3] = in_msat, count
    stored = {(r[0], r[1]): list(r[2:]) for r in conn.execute(
        "SELECT hour, channel, in_msat, out_msat, fee_msat, in_count, out_count FROM flow_hourly")
        if any(r[2:])}
    conn.close()
    return stored == expected


def settled(htlc, out_channel="103x2x0", out_msat=100_000, fee_msat=2, resolved=1_795_467_910.4,
            created=None, updated=None):
    return Forward("103x1x0", htlc, out_channel, out_msat + fee_msat, out_msat, fee_msat, "settled",
                   resolved - 0.1, resolved, created, updated)


def test_a_page_row_replaces_a_differing_live_row_and_the_rollups_follow(tmp_path):
    db = open_db(tmp_path)
    bogus = settled(0, out_channel="103x3x0", out_msat=90_000, fee_msat=12, resolved=1_795_460_000.0, updated=1)
    other = settled(1, updated=2)
    assert db.store_forwards([bogus, other]) == 2
    correct = settled(0, created=1, updated=1)
    assert db.store_forwards([bogus._replace(out_msat=1)]) == 0     # a live repeat changes nothing
    assert db.store_forwards([correct, other._replace(created_index=2)], {"created": 2},
                             authoritative=True) == 0
    rows = sqlite3.connect(db.path).execute(
        "SELECT in_htlc_id, out_channel, in_msat, out_msat, fee_msat, timestamp, created_index, updated_index"
        " FROM forwards ORDER BY in_htlc_id").fetchall()
    assert rows == [(0, "103x2x0", 100_002, 100_000, 2, 1_795_467_910, 1, 1),
                    (1, "103x2x0", 100_002, 100_000, 2, 1_795_467_910, 2, 2)]
    assert rollups_match_forwards(db)
    totals = db.get_flow_aggregation(0)
    assert totals["103x2x0"].out_msat == 200_000 and totals["103x2x0"].out_count == 2
    assert totals["103x3x0"].out_msat == 0 and totals["103x3x0"].out_count == 0


def test_a_live_row_never_replaces_a_stored_one(tmp_path):
    db = open_db(tmp_path)
    correct = settled(0, created=1, updated=1)
    db.store_forwards([correct], authoritative=True)
    db.store_forwards([correct._replace(out_msat=5, fee_msat=100_097)])
    assert sqlite3.connect(db.path).execute("SELECT out_msat FROM forwards").fetchone() == (100_000,)
    assert rollups_match_forwards(db)


def test_an_agreeing_page_writes_nothing_and_a_page_without_indexes_keeps_them(tmp_path):
    db = open_db(tmp_path)
    db.store_forwards([settled(0, created=1, updated=1)], authoritative=True)
    conn = db._conn()
    before = conn.total_changes
    db.store_forwards([settled(0, created=1, updated=1)], authoritative=True)
    db.store_forwards([settled(0)], authoritative=True)                # an old node's page: no indexes
    assert conn.total_changes == before
    assert conn.execute("SELECT created_index, updated_index FROM forwards").fetchone() == (1, 1)
