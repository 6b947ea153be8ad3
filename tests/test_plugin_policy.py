"""revenue-policy end to end: the real plugin on the simulated node, each strategy and
rebalance mode applied by the loops at their next cycle and named in their reasons."""
import sqlite3
import time

import pytest

from plugin_harness import db_path, node_rpc, start_plugin
from simnode import SimNode, SimRpcError
from test_plugin_rebalance import BUDGET, build_market

NOW = time.time()
HOUR = 3600


@pytest.fixture
def node(tmp_path):
    """scarce: 5% local and asked for more than it holds (the controller raises it);
    busy: its HTLC slots nearly full (the controller puts it at the ceiling); even: half full."""
    with SimNode(str(tmp_path)) as sim:
        sim.ids = ids = {
            "scarce": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=100),
            "even": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100),
            "busy": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100,
                                    htlcs_in_use=450, max_htlcs=483),
        }
        for i in range(14 * 24):
            t = NOW - 14 * 86400 + i * HOUR
            sim.add_forward(ids["busy"], ids["even"], out_msat=50_000_000, fee_msat=5_000,
                            received_time=t - 1, resolved_time=t)
            sim.add_forward(ids["busy"], ids["scarce"], out_msat=50_000_000, fee_msat=5_000,
                            status="local_failed" if i % 4 else "settled", received_time=t + 59,
                            resolved_time=None if i % 4 else t + 60)
        yield sim


def peer_of(node, scid):
    return next(c["peer_id"] for c in node_rpc(node).listpeerchannels()["channels"]
                if c["short_channel_id"] == scid)


def fees_set(node, since=0):
    return {c["id"]: c["feeppm"] for c in node.calls_of("setchannel")[since:] if "feeppm" in c}


def decision(result, scid):
    return next(d for d in result["decisions"] if d["short_channel_id"] == scid)


def stored_policies(node):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM peer_policies").fetchall()


def test_static_sets_its_fee_at_once_then_holds_it_and_puts_it_back(node):
    plugin = start_plugin(node)
    scarce = node.ids["scarce"]
    answer = plugin.call("revenue-policy", ["set", peer_of(node, scarce), "static", 333])
    assert answer["strategy"] == "static" and answer["fee_ppm"] == 333 and answer["channels"] == [scarce]
    assert answer["in_force"] == "peer policy: static 333 ppm; rebalance allow"
    result = plugin.call("revenue-adjust-fees")
    assert fees_set(node)[scarce] == 333 and node.channel(scarce)["fee_ppm"] == 333
    reasons = decision(result, scarce)["reasons"]
    assert reasons[0] == "peer policy: static 333 ppm" and "at once" in reasons[1]
    report = plugin.call("revenue-fees", {"scid": scarce})["channels"][0]["last_decision"]
    assert [s["stage"] for s in report["stages"]] == ["policy", "gossip", "htlc_max"]
    assert report["reasons"][0] == "peer policy: static 333 ppm"
    # held: no broadcast the next cycle
    seen = len(node.calls_of("setchannel"))
    again = plugin.call("revenue-adjust-fees")
    assert scarce not in fees_set(node, seen) and decision(again, scarce)["action"] == "hold"
    # the operator moves it by hand: the plugin keeps the policy's fee in place
    node_rpc(node).setchannel(scarce, feebase=0, feeppm=777)
    seen = len(node.calls_of("setchannel"))
    plugin.call("revenue-adjust-fees")
    assert fees_set(node, seen)[scarce] == 333


def test_passive_changes_nothing_and_delete_gives_the_peer_back(node):
    plugin = start_plugin(node)
    busy = node.ids["busy"]
    plugin.call("revenue-policy", {"action": "set", "peer_id": peer_of(node, busy), "strategy": "passive"})
    result = plugin.call("revenue-adjust-fees")
    assert busy not in fees_set(node) and node.channel(busy)["fee_ppm"] == 100
    assert fees_set(node)                                          # the other peers are priced
    busy_decision = decision(result, busy)
    assert busy_decision["action"] == "skip_policy" and busy_decision["new_fee_ppm"] == 100
    assert busy_decision["reasons"][0].startswith("peer policy: passive")
    assert result["cycle"]["skipped_policy"] == 1
    last = plugin.call("revenue-fees", {"scid": busy})["channels"][0]["last_decision"]
    assert last["action"] == "skip_policy" and "peer policy: passive" in last["reasons"][0]
    assert plugin.call("revenue-policy", ["delete", peer_of(node, busy)]) == {
        "peer_id": peer_of(node, busy), "deleted": True}
    seen = len(node.calls_of("setchannel"))
    plugin.call("revenue-adjust-fees")
    assert fees_set(node, seen)[busy] == 2500                      # congested: the options' ceiling


def test_a_dynamic_policy_floor_and_ceiling_bound_every_stage(node):
    plugin = start_plugin(node)
    busy, even = node.ids["busy"], node.ids["even"]
    plugin.call("revenue-policy", ["set", peer_of(node, busy), "dynamic", None, None, 800])
    plugin.call("revenue-policy", ["set", peer_of(node, even), "dynamic", None, 1500, 1600])
    result = plugin.call("revenue-adjust-fees")
    assert fees_set(node)[busy] == 800                             # congested: priced at the peer's ceiling
    assert any(r.endswith("; peer policy: max 800 ppm") for r in decision(result, busy)["reasons"])
    stages = plugin.call("revenue-fees", {"scid": busy})["channels"][0]["last_decision"]["stages"]
    bounds = next(s for s in stages if s["stage"] == "bounds")
    assert bounds["fee_ppm"] == 800 and bounds["reason"].endswith("peer policy: max 800 ppm")
    assert 1500 <= fees_set(node)[even] <= 1600
    assert "peer policy: min 1500 ppm, max 1600 ppm" in " ".join(decision(result, even)["reasons"])
    # the options' bounds still hold for the peers without a policy
    assert all(1 <= fee <= 2500 for fee in fees_set(node).values())


def test_an_expired_policy_is_ignored_and_shown_expired(node):
    plugin = start_plugin(node)
    busy = node.ids["busy"]
    peer = peer_of(node, busy)
    answer = plugin.call("revenue-policy", ["set", peer, "passive", None, None, None, None, 0.0005])
    assert answer["expires_at"] == pytest.approx(time.time() + 1.8, abs=1.5) and answer["expired"] is False
    time.sleep(max(0.0, answer["expires_at"] - time.time()) + 0.2)
    shown = plugin.call("revenue-policy", ["get", peer])
    assert shown["expired"] is True and shown["stored"] is True and shown["in_force"].startswith("expired")
    assert plugin.call("revenue-policy", ["list"])["policies"][0]["expired"] is True
    result = plugin.call("revenue-adjust-fees")
    assert fees_set(node)[busy] == 2500                            # priced as if it had none
    assert not any("peer policy" in r for r in decision(result, busy)["reasons"])


def test_get_list_delete_and_policies_survive_a_restart(node):
    plugin = start_plugin(node)
    scarce, busy = node.ids["scarce"], node.ids["busy"]
    p_scarce, p_busy = peer_of(node, scarce), peer_of(node, busy)
    none = plugin.call("revenue-policy", ["get", p_scarce])
    assert none["stored"] is False and none["strategy"] == "dynamic" and none["rebalance"] == "allow"
    assert none["in_force"].startswith("no policy")
    plugin.call("revenue-policy", ["set", p_scarce.upper().replace("0X", "0x"), "static", 250, None, None, "never"])
    plugin.call("revenue-policy", ["set", p_busy, "dynamic", None, 10, 900, "source-only", 24])
    got = plugin.call("revenue-policy", {"action": "get", "peer_id": p_scarce})
    assert (got["peer_id"], got["strategy"], got["fee_ppm"], got["rebalance"], got["expires_at"]) == (
        p_scarce, "static", 250, "never", None)                # a node id is stored in lower case
    assert plugin.call("revenue-policy", ["set", p_busy, "dynamic", None, 20, 900])["min_fee_ppm"] == 20
    listed = plugin.call("revenue-policy", ["list"])["policies"]
    assert sorted(p["peer_id"] for p in listed) == sorted([p_scarce, p_busy])
    busy_policy = next(p for p in listed if p["peer_id"] == p_busy)
    assert (busy_policy["min_fee_ppm"], busy_policy["rebalance"], busy_policy["expires_at"]) == (20, "allow", None)
    assert plugin.shutdown() == 0
    plugin = start_plugin(node)
    assert plugin.call("revenue-policy", ["list"])["policies"] == listed
    assert plugin.call("revenue-policy", ["delete", p_busy])["deleted"] is True
    assert plugin.call("revenue-policy", ["delete", p_busy])["deleted"] is False
    assert [p["peer_id"] for p in plugin.call("revenue-policy", ["list"])["policies"]] == [p_scarce]


def test_every_bad_parameter_is_refused_and_nothing_is_stored(node):
    plugin = start_plugin(node)
    peer = peer_of(node, node.ids["scarce"])
    closed = node.add_channel(capacity_sats=1_000_000, local_sats=500_000)
    closed_peer = peer_of(node, closed)
    node.close_channel(closed, keep_onchain=True)                   # only a closed channel: unknown
    stranger = "02" + "ab" * 32
    cases = [
        ([], "action is missing"),
        (["sett", peer], "action must be one of set, get, list, delete, got a string 'sett'"),
        ([5], "action must be one of set, get, list, delete, got a number 5"),
        (["set"], "peer_id is missing"),
        (["get"], "peer_id is missing"),
        (["delete"], "peer_id is missing"),
        (["list", peer], "peer_id is not for list"),
        (["set", "02abc"], "malformed node id '02abc'"),
        (["set", "04" + "a" * 64], "must be 66 hex characters starting 02 or 03"),
        (["set", 12], "peer_id must be a node id string"),
        (["get", "x" * 500], "malformed node id 'xxxxxxxx"),
        (["set", stranger], f"unknown peer {stranger}"),
        (["set", closed_peer], f"unknown peer {closed_peer}"),
        (["set", peer, "fixed"], "strategy must be one of dynamic, static, passive, got a string 'fixed'"),
        (["set", peer, 1], "strategy must be one of dynamic, static, passive"),
        (["set", peer, "static"], "strategy static needs fee_ppm"),
        (["set", peer, "static", "500"], "fee_ppm must be a whole number of ppm, got a string '500'"),
        (["set", peer, "static", 1.5], "fee_ppm must be a whole number of ppm, got a number 1.5"),
        (["set", peer, "static", True], "fee_ppm must be a whole number of ppm, got a boolean"),
        (["set", peer, "static", -1], "fee_ppm must be between 0 and 100000 ppm, got -1"),
        (["set", peer, "static", 100001], "fee_ppm must be between 0 and 100000 ppm"),
        (["set", peer, "dynamic", 500], "fee_ppm is for strategy static only"),
        (["set", peer, "passive", 500], "fee_ppm is for strategy static only"),
        (["set", peer, "dynamic", None, "10"], "min_fee_ppm must be a whole number of ppm"),
        (["set", peer, "dynamic", None, -5], "min_fee_ppm must be between 0 and 100000 ppm"),
        (["set", peer, "dynamic", None, None, 10 ** 6], "max_fee_ppm must be between 0 and 100000 ppm"),
        (["set", peer, "dynamic", None, None, []], "max_fee_ppm must be a whole number of ppm, got an array"),
        (["set", peer, "dynamic", None, 900, 800], "min_fee_ppm (900) must not exceed max_fee_ppm (800)"),
        (["set", peer, "static", 300, 100], "min_fee_ppm is for strategy dynamic only"),
        (["set", peer, "passive", None, None, 800], "max_fee_ppm is for strategy dynamic only"),
        (["set", peer, "dynamic", None, None, None, "sometimes"],
         "rebalance must be one of allow, never, source-only, destination-only, got a string 'sometimes'"),
        (["set", peer, "passive", None, None, None, "allow"], "rebalance allow does not go with strategy passive"),
        (["set", peer, "passive", None, None, None, "source-only"], "does not go with strategy passive"),
        (["set", peer, "dynamic", None, None, None, None, 0], "expires_hours must be more than 0"),
        (["set", peer, "dynamic", None, None, None, None, -2], "expires_hours must be more than 0"),
        (["set", peer, "dynamic", None, None, None, None, 10 ** 9], "at most 87600 hours"),
        (["set", peer, "dynamic", None, None, None, None, "24"], "expires_hours must be a number of hours"),
        (["get", peer, "static"], "strategy is for set only, not for get"),
        (["delete", peer, None, None, None, None, "never"], "rebalance is for set only, not for delete"),
        (["list", None, None, None, None, None, None, 5], "expires_hours is for set only, not for list"),
        (["set", peer, "dynamic", None, None, None, None, None, "extra"], "too many parameters"),
        ({"action": "set", "peer_id": peer, "fee": 5}, "unknown parameter 'fee'"),
    ]
    for params, message in cases:
        with pytest.raises(SimRpcError) as err:
            plugin.call("revenue-policy", params)
        assert err.value.code == -32602, (params, err.value)
        assert message in err.value.message, (params, err.value.message)
        assert "Traceback" not in err.value.message and not err.value.data
    assert stored_policies(node) == [] and plugin.call("revenue-policy", ["list"]) == {"policies": []}


# --- rebalancing -------------------------------------------------------------------------
@pytest.fixture
def market(tmp_path):
    """D sells outbound at 800 ppm and is low; S1, S2 are full, cheap sources."""
    with SimNode(str(tmp_path)) as sim:
        sim.ids = build_market(sim)
        sim.set_plugin_loaded("sling", True)
        yield sim


def ready(node):
    plugin = start_plugin(node, **BUDGET)
    plugin.call("revenue-analyze")
    return plugin


def verdict(result, scid):
    return next(d for d in result["decisions"] if d["short_channel_id"] == scid)


@pytest.mark.parametrize("mode", ["never", "source-only"])
def test_a_peer_never_filled_is_no_destination_and_a_manual_rebalance_is_refused(market, mode):
    plugin = ready(market)
    d = market.ids["D"]
    plugin.call("revenue-policy", ["set", peer_of(market, d), "dynamic", None, None, None, mode])
    result = plugin.call("revenue-rebalance")
    assert result["started"] == [] and market.calls_of("sling-once") == []
    reasons = verdict(result, d)["reasons"]
    expected = "peer policy: rebalance never" if mode == "never" else \
        "peer policy: rebalance source-only: never a destination"
    assert expected in reasons and verdict(result, d)["role"] == "none"
    with pytest.raises(SimRpcError) as err:
        plugin.call("revenue-rebalance", {"scid": d, "force": True})
    assert err.value.code == -32001 and expected in err.value.message and d in err.value.message
    plugin.call("revenue-policy", ["delete", peer_of(market, d)])
    assert plugin.call("revenue-rebalance")["started"][0]["scid"] == d    # allowed again


@pytest.mark.parametrize("strategy,mode,reason", [
    ("dynamic", "destination-only", "peer policy: rebalance destination-only: never a source"),
    ("dynamic", "never", "peer policy: rebalance never"),
    ("passive", None, "peer policy: passive: never rebalanced"),
])
def test_a_peer_never_drawn_from_is_no_source(market, strategy, mode, reason):
    plugin = ready(market)
    s1, s2, d = market.ids["S1"], market.ids["S2"], market.ids["D"]
    plugin.call("revenue-policy", ["set", peer_of(market, s1), strategy, None, None, None, mode])
    result = plugin.call("revenue-rebalance")
    assert [s["scid"] for s in result["started"]] == [d]
    assert market.calls_of("sling-once")[-1]["candidates"] == [s2]
    assert verdict(result, d)["candidates"] == [s2]
    assert reason in verdict(result, s1)["reasons"] and verdict(result, s1)["role"] == "none"


def test_a_destination_only_peer_is_still_filled(market):
    plugin = ready(market)
    d = market.ids["D"]
    plugin.call("revenue-policy", ["set", peer_of(market, d), "dynamic", None, None, None, "destination-only"])
    assert plugin.call("revenue-rebalance", {"scid": d})["decision"]["start"] is True
