"""Live forward_event notifications through the real plugin process: bad ones are not stored
and say why in one warning; a live row never stands against the node's listforwards row."""
import sqlite3
import time

import pytest

from plugin_harness import db_path, node_rpc, start_plugin, stored_forward_keys
from simnode import SimNode

NOW = time.time()


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        sim.scids = [sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000) for _ in range(3)]
        yield sim


def settled_event(node, out_msat=3_000_000, fee_msat=300):
    """A forward settled in the node, and the forward_event lightningd sent for it."""
    created = node.add_forward(node.scids[0], node.scids[1], out_msat=out_msat, fee_msat=fee_msat,
                               status="offered", received_time=NOW - 7200)
    node.settle_forward(created, resolved_time=NOW - 7100)
    return created, node.forwards.events(created)[-1]


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def drop(event, field):
    return {k: v for k, v in event.items() if k != field}


BAD = [  # (field, how the event is spoiled)
    ("in_msat", lambda e: dict(e, in_msat=-1)),
    ("in_msat", lambda e: dict(e, in_msat=3000300.5)),
    ("in_msat", lambda e: drop(e, "in_msat")),
    ("out_msat", lambda e: dict(e, out_msat="much")),
    ("out_msat", lambda e: drop(e, "out_msat")),
    ("fee_msat", lambda e: dict(e, fee_msat=-300)),
    ("in_htlc_id", lambda e: drop(e, "in_htlc_id")),
    ("in_htlc_id", lambda e: dict(e, in_htlc_id=-1)),
    ("status", lambda e: dict(e, status="completed")),
    ("status", lambda e: dict(e, status=["settled"])),
]


def test_bad_forward_events_are_not_stored_and_one_warning_names_each_field(node):
    plugin = start_plugin(node)
    _, event = settled_event(node)
    since = len(plugin.logs)
    for field, spoil in BAD:
        before = len(plugin.logs)
        assert plugin.notify("forward_event", spoil(event))
        message = plugin.wait_for_log(r"^forward_event not stored", since=before)
        assert message.startswith(f"forward_event not stored: {field} "), message
    # a good event sent after them is stored: the bad ones were handled, not queued, before it
    plugin.notify("forward_event", event)
    assert wait_for(lambda: stored_forward_keys(node) != [])
    assert stored_forward_keys(node) == [(event["in_channel"], event["in_htlc_id"])]
    new_logs = plugin.logs[since:]
    warnings = [(lv, m) for lv, m in new_logs if "forward_event" in m]
    assert len(warnings) == len(BAD) and {lv for lv, _ in warnings} == {"warn"}
    assert not any("Traceback" in m for _, m in plugin.logs)


def test_a_bogus_live_event_is_replaced_by_the_listforwards_row(node):
    plugin = start_plugin(node)
    created, event = settled_event(node)
    # valid on its face, wrong in every figure: another channel, amounts, an earlier hour
    bogus = dict(event, out_channel=node.scids[2], out_msat=2_000_000, fee_msat=1_000_300,
                 resolved_time=event["resolved_time"] - 5 * 3600)
    plugin.notify("forward_event", bogus)
    assert wait_for(lambda: plugin.call("revenue-status")["database"]["forwards_rows"] == 1)
    assert stored_row(node)[1:5] == (node.scids[2], 3_000_300, 2_000_000, 1_000_300)

    plugin.call("revenue-analyze")                    # the catch-up pages listforwards
    listed = node_rpc(node).call("listforwards", {"index": "created", "start": created, "limit": 1})["forwards"][0]
    assert stored_row(node) == (listed["in_channel"], listed["out_channel"], listed["in_msat"],
                                listed["out_msat"], listed["fee_msat"], int(listed["resolved_time"]),
                                listed["created_index"], listed["updated_index"])
    assert rollups(node) == rollups_from_forwards(node)
    flows = {f["short_channel_id"]: f for f in plugin.call("revenue-analyze")["channels"]}
    assert flows[node.scids[1]]["out_count"] == 1 and flows[node.scids[2]]["out_count"] == 0
    assert flows[node.scids[1]]["fees_earned_msat"] == 300

    plugin.notify("forward_event", bogus)             # the bogus event again changes nothing
    plugin.notify("forward_event", dict(event, in_channel=node.scids[2]))   # (a marker to wait for)
    assert wait_for(lambda: len(stored_forward_keys(node)) == 2)
    assert stored_row(node)[1:5] == (node.scids[1], 3_000_300, 3_000_000, 300)


def stored_row(node):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT in_channel, out_channel, in_msat, out_msat, fee_msat, timestamp, created_index,"
            " updated_index FROM forwards WHERE in_channel = ?", (node.scids[0],)).fetchone()


def rollups(node):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return {(r[0], r[1]): r[2:] for r in conn.execute(
            "SELECT hour, channel, in_msat, out_msat, fee_msat, in_count, out_count FROM flow_hourly")
            if any(r[2:])}


def rollups_from_forwards(node):
    totals = {}
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        for in_ch, out_ch, in_msat, out_msat, fee_msat, ts in conn.execute(
                "SELECT in_channel, out_channel, in_msat, out_msat, fee_msat, timestamp FROM forwards"):
            inn = totals.setdefault((ts // 3600, in_ch), [0, 0, 0, 0, 0])
            inn[0] += in_msat
            inn[3] += 1
            out = totals.setdefault((ts // 3600, out_ch), [0, 0, 0, 0, 0])
            out[1] += out_msat
            out[2] += fee_msat
            out[4] += 1
    return {k: tuple(v) for k, v in totals.items()}
