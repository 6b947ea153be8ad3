"""The fee controller end to end: the real plugin learns demand from the node's forwards
(settled and refused for lack of balance) and sets fees on the simulated node."""
import sqlite3
import time

import pytest

from plugin_harness import db_path, node_rpc, start_plugin
from simnode import SimNode, SimRpcError

NOW = time.time()
HOUR = 3600


@pytest.fixture
def node(tmp_path):
    """Four channels with two weeks of history at 100 ppm:
    scarce  5% local, asked for ~1 forward an hour: most refused for lack of balance
    even    half full, asked as often: all settled
    idle    peer-opened, never asked for anything
    busy    the way in of every forward, its HTLC slots nearly full"""
    with SimNode(str(tmp_path)) as sim:
        sim.ids = ids = {
            "scarce": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=100),
            "even": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100),
            "idle": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=100, opener="remote"),
            "busy": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100,
                                    htlcs_in_use=450, max_htlcs=483),
        }
        for i in range(14 * 24):
            t = NOW - 14 * 86400 + i * HOUR
            sim.add_forward(ids["busy"], ids["even"], out_msat=50_000_000, fee_msat=5_000,
                            received_time=t - 1, resolved_time=t)
            if i % 4:   # the scarce channel ran dry: three in four were refused
                sim.add_forward(ids["busy"], ids["scarce"], out_msat=50_000_000, fee_msat=5_000,
                                status="local_failed", received_time=t + 60)
            else:
                sim.add_forward(ids["busy"], ids["scarce"], out_msat=50_000_000, fee_msat=5_000,
                                received_time=t + 59, resolved_time=t + 60)
        yield sim


def setchannel_calls(node):
    return list(node.calls_of("setchannel"))


def decision_of(result, scid):
    return next(d for d in result["decisions"] if d["short_channel_id"] == scid)


def stored(node, sql):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def test_refused_forwards_are_stored_as_unmet_demand_never_as_revenue(node):
    plugin = start_plugin(node)
    scarce, even = node.ids["scarce"], node.ids["even"]
    assert stored(node, "SELECT COUNT(*), MIN(failcode), MAX(failcode) FROM failed_forwards")[0] == (252, 4103, 4103)
    # one more refused live, as lightningd tells it: no out_msat, a failcode, created_index
    created = node.add_forward(node.ids["busy"], scarce, out_msat=40_000_000, fee_msat=4_000,
                               status="local_failed", received_time=time.time())
    node.emit_forward(plugin, created)
    window_start = (time.time() - 7 * 86400) // HOUR * HOUR        # the flow window, whole hours
    flows = {f["short_channel_id"]: f for f in plugin.call("revenue-analyze")["channels"]}
    assert stored(node, "SELECT COUNT(*) FROM failed_forwards")[0][0] == 253
    in_window = stored(node, f"SELECT COUNT(*), SUM(in_msat) FROM failed_forwards WHERE out_channel = '{scarce}'"
                             f" AND received_time >= {window_start}")[0]
    assert in_window[0] > 100
    assert (flows[scarce]["unmet_count"], flows[scarce]["unmet_sats"]) == (in_window[0], in_window[1] // 1000)
    assert flows[even]["unmet_count"] == 0
    earned = stored(node, f"SELECT SUM(fee_msat) FROM forwards WHERE out_channel = '{scarce}'"
                          f" AND timestamp >= {window_start}")[0][0]
    assert flows[scarce]["fees_earned_msat"] == earned               # refused ones add nothing
    revenue = stored(node, f"SELECT COALESCE(SUM(fee_msat), 0) FROM forwards WHERE out_channel = '{scarce}'")
    assert revenue == [(84 * 5_000,)]      # the 253 refused ones earned nothing
    # restarting hydrates nothing twice
    assert plugin.shutdown() == 0
    start_plugin(node)
    assert stored(node, "SELECT COUNT(*) FROM failed_forwards")[0][0] == 253


def test_demand_beyond_the_balance_raises_the_fee_and_idle_channels_are_never_raised(node):
    plugin = start_plugin(node)
    result = plugin.call("revenue-adjust-fees")
    # fee changes (the max-HTLC may go with them, or alone: tests/test_plugin_htlc_max.py)
    calls = {c["id"]: c["feeppm"] for c in setchannel_calls(node) if "feeppm" in c}
    scarce, even, idle, busy = (node.ids[k] for k in ("scarce", "even", "idle", "busy"))
    assert calls[scarce] > 100 and node.channel(scarce)["fee_ppm"] == calls[scarce]
    scarce_decision = decision_of(result, scarce)
    assert scarce_decision["liquidity_price_ppm"] > scarce_decision["demand_price_ppm"]
    assert "liquidity price" in " ".join(scarce_decision["reasons"])
    assert calls[busy] == 2500                                       # HTLC slots nearly full: the ceiling
    assert idle not in calls                                         # no demand: never raised
    assert "no arrivals" in " ".join(decision_of(result, idle)["reasons"])
    assert all(1 <= fee <= 2500 for fee in calls.values())
    assert result["cycle"]["changed"] == len(calls)

    before = len(setchannel_calls(node))
    again = plugin.call("revenue-adjust-fees")                       # minutes later: no new gossip
    assert len(setchannel_calls(node)) == before and again["cycle"]["changed"] == 0


def test_revenue_fees_explains_each_channel(node):
    plugin = start_plugin(node)
    plugin.call("revenue-adjust-fees")
    report = plugin.call("revenue-fees")
    assert {c["short_channel_id"] for c in report["channels"]} == set(node.ids.values())
    scarce = plugin.call("revenue-fees", {"scid": node.ids["scarce"]})["channels"][0]
    decision = scarce["last_decision"]
    assert decision["action"] == "set" and decision["applied"] is True
    stages = [s["stage"] for s in decision["stages"]]
    assert stages == ["demand", "liquidity", "explore", "congestion", "bounds", "gossip", "htlc_max"]
    assert "arrivals" in decision["stages"][0]["reason"] and "price scale" in decision["stages"][0]["reason"]
    assert scarce["controller_state"]["fee_ppm"] == scarce["fee_ppm"]
    with pytest.raises(SimRpcError, match="unknown channel 1x2x3"):
        plugin.call("revenue-fees", {"scid": "1x2x3"})


def test_dry_run_decides_and_records_but_never_calls_setchannel(node):
    plugin = start_plugin(node, **{"revenue-ops-dry-run": True})
    result = plugin.call("revenue-adjust-fees")
    assert setchannel_calls(node) == []
    wanted = [d for d in result["decisions"] if d["action"] == "set"]
    assert wanted and all(d["applied"] is False for d in wanted)
    assert node.channel(node.ids["scarce"])["fee_ppm"] == 100
    decision = plugin.call("revenue-fees", {"scid": node.ids["scarce"]})["channels"][0]["last_decision"]
    assert decision["action"] == "set" and decision["applied"] is False
    assert "dry-run: not applied" in decision["reasons"]
    again = plugin.call("revenue-adjust-fees")                       # proposed again: never believed set
    assert decision_of(again, node.ids["scarce"])["action"] == "set"


def test_controller_state_and_fee_history_survive_a_restart(node):
    plugin = start_plugin(node)
    plugin.call("revenue-adjust-fees")
    before = {c["short_channel_id"]: c["controller_state"] for c in plugin.call("revenue-fees")["channels"]}
    history = stored(node, "SELECT scid, time, fee_ppm FROM fee_history ORDER BY scid, time")
    assert plugin.shutdown() == 0
    plugin = start_plugin(node)
    after = {c["short_channel_id"]: c["controller_state"] for c in plugin.call("revenue-fees")["channels"]}
    assert after == before and all(after.values())
    assert stored(node, "SELECT scid, time, fee_ppm FROM fee_history ORDER BY scid, time") == history
    # the fees the controller found and set are in the history (what it found on a channel at
    # the moment it set another is superseded: the forwards before say what it was)
    assert {(s, f) for s, _, f in history} == {(s, node.channel(s)["fee_ppm"]) for s in node.ids.values()}


def test_a_fee_set_by_hand_is_adopted_and_no_evidence_is_lost(node):
    # a lookback longer than the 14 days of history: every forward is inside it however long
    # after the history was made this test runs (at 14 days the oldest hour sat on the edge)
    plugin = start_plugin(node, **{"revenue-ops-demand-lookback-days": 15})
    plugin.call("revenue-adjust-fees")
    scarce = node.ids["scarce"]
    node_rpc(node).setchannel(scarce, feebase=0, feeppm=777)        # the operator steps in
    result = plugin.call("revenue-adjust-fees")
    decision = decision_of(result, scarce)
    assert "fee changed outside the controller" in " ".join(decision["reasons"])
    assert decision["action"] != "set"                               # adopted, not fought at once
    assert "from 336 arrivals" in decision["reasons"][1]             # every forward still counts
    assert stored(node, f"SELECT fee_ppm FROM fee_history WHERE scid = '{scarce}' ORDER BY time")[-1] == (777,)


def test_the_state_of_a_closed_channel_is_collected(node):
    plugin = start_plugin(node)
    plugin.call("revenue-adjust-fees")
    even = node.ids["even"]
    node.close_channel(even)
    result = plugin.call("revenue-adjust-fees")
    assert result["cycle"]["states_pruned"] == 1
    plugin.wait_for_log(r"Fee controller GC: removed state of 1 closed channels")
    assert even not in {c["short_channel_id"] for c in plugin.call("revenue-fees")["channels"]}
    assert stored(node, f"SELECT COUNT(*) FROM fee_state WHERE scid = '{even}'")[0][0] == 0
    assert stored(node, f"SELECT COUNT(*) FROM fee_history WHERE scid = '{even}'")[0][0] == 0


def test_clboss_is_told_to_leave_a_peer_alone_once_before_its_first_fee_change(node):
    node.set_plugin_loaded("clboss", True)
    plugin = start_plugin(node)
    plugin.call("revenue-adjust-fees")
    unmanaged = node.calls_of("clboss-unmanage")
    changed = {c["id"] for c in setchannel_calls(node) if "feeppm" in c}   # a max-HTLC alone is no fee
    assert changed
    peers = {c["peer_id"] for c in node_rpc(node).listpeerchannels()["channels"]
             if c["short_channel_id"] in changed}
    assert {u["nodeid"] for u in unmanaged} == peers and all(u["tags"] == "lnfee" for u in unmanaged)
    assert plugin.shutdown() == 0
    plugin = start_plugin(node)
    node.update_channel(node.ids["busy"], fee_ppm=100)               # moved back: the ceiling again
    plugin.call("revenue-adjust-fees")
    assert len(node.calls_of("clboss-unmanage")) == len(unmanaged)   # remembered in the database


def test_a_failing_setchannel_is_recorded_and_retried_next_cycle(node):
    plugin = start_plugin(node)
    node.fault("setchannel", "error", code=-32602, message="Short channel id not found")
    result = plugin.call("revenue-adjust-fees")
    assert result["cycle"]["failed"] >= 1 and result["cycle"]["changed"] == 0
    assert stored(node, "SELECT COUNT(*) FROM fee_history WHERE fee_ppm != 100")[0][0] == 0
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
    assert by_scid[node.ids["idle"]]["state"] == "IDLE"
