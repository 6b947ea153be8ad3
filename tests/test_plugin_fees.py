"""The fee controller end to end: the real plugin sets fees on the simulated node.

The plugin runs on the real clock, so "time passes" is simulated the way a restart after
hours away would see it: the controller state in the database is moved back in time.
"""
import json
import sqlite3
import time

import pytest

from plugin_harness import db_path, node_rpc, start_plugin
from simnode import SimNode, SimRpcError

NOW = time.time()
HOURS = 3600


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        sim.ids = {
            "scarce": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=100),
            "even": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100),
            "fresh": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=100, opener="remote"),
            "busy": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100,
                                    htlcs_in_use=450, max_htlcs=483),
        }
        ids = sim.ids
        for i in range(40):   # the scarce and the even channel route out; "fresh" never did
            t = NOW - 2 * 86400 + i * 3000
            out = ids["scarce"] if i % 2 else ids["even"]
            sim.add_forward(ids["busy"], out, out_msat=20_000_000, fee_msat=2_000, received_time=t - 1,
                            resolved_time=t)
        yield sim


def setchannel_calls(node):
    return [p for p in node.calls_of("setchannel")]


def age_controller_state(node, hours):
    """As if `hours` had passed since every fee was last changed and broadcast."""
    with sqlite3.connect(db_path(node)) as conn:
        for scid, text in conn.execute("SELECT scid, state_json FROM fee_state").fetchall():
            state = json.loads(text)
            state["last_change_at"] -= hours * HOURS
            if state.get("last_broadcast_at"):
                state["last_broadcast_at"] -= hours * HOURS
            conn.execute("UPDATE fee_state SET state_json = ? WHERE scid = ?", (json.dumps(state), scid))


def first_sight(node, **options):
    """Starts the plugin, lets the controller see every channel once, then stops it."""
    plugin = start_plugin(node, **options)
    first = plugin.call("revenue-adjust-fees")
    assert {d["action"] for d in first["decisions"]} == {"skip_observing"}
    assert setchannel_calls(node) == []                  # a new fee is observed before it is judged
    assert plugin.shutdown() == 0
    age_controller_state(node, 12)
    return start_plugin(node, **options)


def decision_of(result, scid):
    return next(d for d in result["decisions"] if d["short_channel_id"] == scid)


def test_scarcity_and_congestion_raise_fees_through_setchannel(node):
    plugin = first_sight(node)
    result = plugin.call("revenue-adjust-fees")
    calls = {c["id"]: c for c in setchannel_calls(node)}
    scarce, busy, fresh = node.ids["scarce"], node.ids["busy"], node.ids["fresh"]
    assert scarce in calls and calls[scarce]["feeppm"] >= 200      # 5% local: about 2.7x
    assert calls[busy]["feeppm"] == 2500                            # HTLC slots nearly full: the ceiling
    assert all(1 <= c["feeppm"] <= 2500 for c in calls.values())
    assert node.channel(scarce)["fee_ppm"] == calls[scarce]["feeppm"]
    reasons = " ".join(decision_of(result, scarce)["reasons"]).lower()
    assert "scarc" in reasons
    fresh_decision = decision_of(result, fresh)
    assert fresh_decision["new_fee_ppm"] < 200 and "exempt" in " ".join(fresh_decision["reasons"]).lower()
    assert result["cycle"]["changed"] == len(calls)

    before = len(setchannel_calls(node))
    again = plugin.call("revenue-adjust-fees")                       # minutes later: no new gossip
    assert len(setchannel_calls(node)) == before
    assert again["cycle"]["changed"] == 0


def test_revenue_fees_explains_each_channel(node):
    plugin = first_sight(node)
    plugin.call("revenue-adjust-fees")
    report = plugin.call("revenue-fees")
    assert {c["short_channel_id"] for c in report["channels"]} == set(node.ids.values())
    scarce = plugin.call("revenue-fees", {"scid": node.ids["scarce"]})["channels"][0]
    assert scarce["last_decision"]["action"] == "set" and scarce["last_decision"]["applied"] is True
    assert scarce["last_decision"]["reasons"]
    assert scarce["flow_state"] in ("SOURCE", "SINK", "BALANCED", "IDLE")
    assert scarce["controller_state"]["fee_ppm"] == scarce["fee_ppm"]
    with pytest.raises(SimRpcError, match="unknown channel 1x2x3"):
        plugin.call("revenue-fees", {"scid": "1x2x3"})


def test_dry_run_decides_and_records_but_never_calls_setchannel(node):
    plugin = first_sight(node, **{"revenue-ops-dry-run": True})
    result = plugin.call("revenue-adjust-fees")
    assert setchannel_calls(node) == []
    wanted = [d for d in result["decisions"] if d["action"] == "set"]
    assert wanted and all(d["applied"] is False for d in wanted)
    assert node.channel(node.ids["scarce"])["fee_ppm"] == 100
    decision = plugin.call("revenue-fees", {"scid": node.ids["scarce"]})["channels"][0]["last_decision"]
    assert decision["action"] == "set" and decision["applied"] is False
    assert "dry-run: not applied" in decision["reasons"]


def test_controller_state_survives_a_restart(node):
    plugin = first_sight(node)
    plugin.call("revenue-adjust-fees")
    before = {c["short_channel_id"]: c["controller_state"] for c in plugin.call("revenue-fees")["channels"]}
    assert plugin.shutdown() == 0
    plugin = start_plugin(node)
    after = {c["short_channel_id"]: c["controller_state"] for c in plugin.call("revenue-fees")["channels"]}
    assert after == before and all(after.values())


def test_the_state_of_a_closed_channel_is_collected(node):
    plugin = first_sight(node)
    even = node.ids["even"]
    node.close_channel(even)
    result = plugin.call("revenue-adjust-fees")
    assert result["cycle"]["states_pruned"] == 1
    plugin.wait_for_log(r"Fee controller GC: removed state of 1 closed channels")
    assert even not in {c["short_channel_id"] for c in plugin.call("revenue-fees")["channels"]}
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM fee_state WHERE scid = ?", (even,)).fetchone()[0] == 0


def test_clboss_is_told_to_leave_a_peer_alone_once_before_its_first_fee_change(node):
    node.set_plugin_loaded("clboss", True)
    plugin = first_sight(node)
    plugin.call("revenue-adjust-fees")
    unmanaged = node.calls_of("clboss-unmanage")
    changed = {c["id"] for c in setchannel_calls(node)}
    peers = {c["peer_id"] for c in node_rpc(node).listpeerchannels()["channels"]
             if c["short_channel_id"] in changed}
    assert {u["nodeid"] for u in unmanaged} == peers and all(u["tags"] == "lnfee" for u in unmanaged)
    assert plugin.shutdown() == 0
    age_controller_state(node, 12)
    plugin = start_plugin(node)
    plugin.call("revenue-adjust-fees")
    assert len(node.calls_of("clboss-unmanage")) == len(unmanaged)   # remembered in the database


def test_a_failing_setchannel_is_recorded_and_retried_next_cycle(node):
    plugin = first_sight(node)
    node.fault("setchannel", "error", code=-32602, message="Short channel id not found")
    result = plugin.call("revenue-adjust-fees")
    assert result["cycle"]["failed"] >= 1 and result["cycle"]["changed"] == 0
    node.clear_faults()
    result = plugin.call("revenue-adjust-fees")
    assert result["cycle"]["changed"] >= 1


def test_flow_analysis_never_lists_all_forwards(node):
    plugin = start_plugin(node)
    seen = len(node.calls_of("listforwards"))
    flows = plugin.call("revenue-analyze")
    calls = node.calls_of("listforwards")[seen:]
    assert all(c.get("index") in ("created", "updated") and c.get("start", 0) > 0 and c.get("limit")
               for c in calls)                             # only the paged catch-up after the mark
    by_scid = {c["short_channel_id"]: c for c in flows["channels"]}
    assert by_scid[node.ids["busy"]]["state"] == "SINK"
    assert by_scid[node.ids["fresh"]]["state"] == "IDLE"
