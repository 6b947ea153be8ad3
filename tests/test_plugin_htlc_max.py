"""Max-HTLC management end to end: the real plugin sets each channel's htlc_maximum_msat on
the simulated node from its spendable balance, with the fee or alone within the gossip
budget."""
import time

import pytest

from plugin_harness import node_rpc, start_plugin

ON = {"revenue-ops-manage-htlc-max": True}   # off by default: see the README
from simnode import SimNode

NOW = time.time()
HOUR = 3600
CAP_MSAT = 2_000_000_000
TOP = CAP_MSAT - 20_000_000              # capacity less the 1 % reserve: lightningd's ceiling


@pytest.fixture
def node(tmp_path):
    """scarce: 5 % local, asked for ~1 forward an hour, most refused: its fee goes up
    idle:   peer-opened, 5 % local, never asked for anything: its fee is held
    even:   60 % local, every forward settles
    entry:  the way in of every forward, 75 % local
    Every channel advertises the ceiling, as a new channel does."""
    with SimNode(str(tmp_path)) as sim:
        sim.ids = ids = {
            "scarce": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=100),
            "idle": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=100, opener="remote"),
            "even": sim.add_channel(capacity_sats=2_000_000, local_sats=1_200_000, fee_ppm=100),
            "entry": sim.add_channel(capacity_sats=2_000_000, local_sats=1_500_000, fee_ppm=100),
        }
        for i in range(14 * 24):
            t = NOW - 14 * 86400 + i * HOUR
            sim.add_forward(ids["entry"], ids["even"], out_msat=50_000_000, fee_msat=5_000,
                            received_time=t - 1, resolved_time=t)
            if i % 4:
                sim.add_forward(ids["entry"], ids["scarce"], out_msat=50_000_000, fee_msat=5_000,
                                status="local_failed", received_time=t + 60)
            else:
                sim.add_forward(ids["entry"], ids["scarce"], out_msat=50_000_000, fee_msat=5_000,
                                received_time=t + 59, resolved_time=t + 60)
        yield sim


def advertised(node, scid):
    """What listpeerchannels says the channel advertises (both places lightningd shows it)."""
    entry = next(c for c in node_rpc(node).listpeerchannels()["channels"] if c["short_channel_id"] == scid)
    assert entry["updates"]["local"]["htlc_maximum_msat"] == entry["maximum_htlc_out_msat"]
    return entry["maximum_htlc_out_msat"], entry["spendable_msat"]


def calls_for(node, scid, since=0):
    return [c for c in node.calls_of("setchannel")[since:] if c["id"] == scid]


def decision_of(result, scid):
    return next(d for d in result["decisions"] if d["short_channel_id"] == scid)


def test_a_drained_channel_gets_its_max_lowered_in_the_same_setchannel_as_its_fee(node):
    plugin = start_plugin(node, **ON)
    scarce = node.ids["scarce"]
    assert advertised(node, scarce)[0] == TOP
    result = plugin.call("revenue-adjust-fees")
    calls = calls_for(node, scarce)
    assert len(calls) == 1 and calls[0]["feeppm"] > 100           # one broadcast: fee and max together
    htlc_max, spendable = advertised(node, scarce)
    assert calls[0]["htlcmax"] == htlc_max == TOP // 32           # 79 k sat spendable: the band below
    assert htlc_max <= spendable
    d = decision_of(result, scarce)
    assert d["action"] == "set" and d["new_htlc_max_msat"] == htlc_max and d["htlc_max_msat"] == TOP
    assert "sent with the fee" in d["reasons"][-1]
    assert result["cycle"]["htlc_max_changed"] >= 1
    plugin.wait_for_log(rf"Fee {scarce}: 100 -> {calls[0]['feeppm']} ppm, max-HTLC {htlc_max} msat")


def test_with_no_fee_change_due_the_max_goes_alone_once_and_spends_a_gossip_token(node):
    plugin = start_plugin(node, **ON)
    idle = node.ids["idle"]
    result = plugin.call("revenue-adjust-fees")
    d = decision_of(result, idle)
    assert d["action"] == "set_htlc_max" and d["new_fee_ppm"] == d["old_fee_ppm"] == 100
    assert calls_for(node, idle) == [{"id": idle, "htlcmax": d["new_htlc_max_msat"]}]   # the fee untouched
    assert advertised(node, idle)[0] == d["new_htlc_max_msat"] and node.channel(idle)["fee_ppm"] == 100
    fee_calls = [c for c in node.calls_of("setchannel") if "feeppm" in c]
    assert result["cycle"]["htlc_max_alone"] == 1 and result["cycle"]["changed"] == len(fee_calls)
    state = plugin.call("revenue-fees", {"scid": idle})["channels"][0]["controller_state"]
    assert state["gossip_tokens"] == 1.0 and state["last_broadcast_at"] is not None   # one of two: a broadcast
    seen = len(node.calls_of("setchannel"))
    again = plugin.call("revenue-adjust-fees")
    assert calls_for(node, idle, seen) == [] and decision_of(again, idle)["action"] != "set_htlc_max"


def test_balance_noise_moves_neither_the_max_nor_the_gossip(node):
    # broadcasts allowed at any time: only the bands' hysteresis keeps the max still
    plugin = start_plugin(node, **ON, **{"revenue-ops-fee-broadcast-min-interval-seconds": 0})
    idle = node.ids["idle"]
    plugin.call("revenue-adjust-fees")
    settled, _ = advertised(node, idle)
    assert settled == TOP // 32                                     # 80 k sat spendable: the band below
    seen = len(node.calls_of("setchannel"))
    for local_sats in (95_000, 150_000, 88_000, 145_000, 84_000, 120_000):   # 64-130 k spendable
        node.set_balance(idle, local_sats * 1000)
        d = decision_of(plugin.call("revenue-adjust-fees"), idle)
        assert d["htlc_max_target_msat"] == settled and d["action"] != "set_htlc_max"
    assert calls_for(node, idle, seen) == [] and advertised(node, idle)[0] == settled
    # a real refill (to 90 %) wants it raised, with headroom: it goes alone on the second
    # token of the bucket, and the bucket is empty after it
    node.set_balance(idle, 1_800_000_000)
    d = decision_of(plugin.call("revenue-adjust-fees"), idle)
    assert d["htlc_max_target_msat"] == TOP // 2 and d["action"] == "set_htlc_max"
    assert "raised to the band 990,000 sat" in d["reasons"][-1]
    assert calls_for(node, idle, seen) == [{"id": idle, "htlcmax": TOP // 2}]
    state = plugin.call("revenue-fees", {"scid": idle})["channels"][0]["controller_state"]
    assert state["gossip_tokens"] < 0.01                       # refilling from empty


def test_off_by_default_it_leaves_it_alone_and_setconfig_turns_it_on(node):
    plugin = start_plugin(node)
    result = plugin.call("revenue-adjust-fees")
    assert node.calls_of("setchannel") and not any("htlcmax" in c for c in node.calls_of("setchannel"))
    assert all(advertised(node, s)[0] == TOP for s in node.ids.values())
    assert "revenue-ops-manage-htlc-max is off" in decision_of(result, node.ids["scarce"])["reasons"][-1]
    assert plugin.call("revenue-status")["options"]["revenue-ops-manage-htlc-max"] is False
    node_rpc(node).setconfig("revenue-ops-manage-htlc-max", "true")
    plugin.call("revenue-adjust-fees")
    assert advertised(node, node.ids["idle"])[0] < TOP               # managed from the next cycle


def test_revenue_fees_shows_the_max_its_target_and_why(node):
    plugin = start_plugin(node, **ON)
    plugin.call("revenue-adjust-fees")
    row = plugin.call("revenue-fees", {"scid": node.ids["scarce"]})["channels"][0]
    assert row["htlc_maximum_msat"] == TOP // 32 and row["spendable_msat"] >= row["htlc_maximum_msat"]
    last = row["last_decision"]
    assert last["htlc_max_target_msat"] == last["new_htlc_max_msat"] == TOP // 32
    stage = last["stages"][-1]
    assert stage["stage"] == "htlc_max" and "lowered to the band 61,875 sat" in stage["reason"]


def test_dry_run_decides_and_shows_it_but_sets_nothing(node):
    plugin = start_plugin(node, **ON, **{"revenue-ops-dry-run": True})
    result = plugin.call("revenue-adjust-fees")
    assert node.calls_of("setchannel") == []
    idle = decision_of(result, node.ids["idle"])
    assert idle["action"] == "set_htlc_max" and idle["applied"] is False and "dry-run: not applied" in idle["reasons"]
    assert all(advertised(node, s)[0] == TOP for s in node.ids.values())
    again = decision_of(plugin.call("revenue-adjust-fees"), node.ids["idle"])
    assert again["action"] == "set_htlc_max"                       # never believed set: proposed again


def test_a_failing_setchannel_is_a_logged_error_and_changes_nothing(node):
    plugin = start_plugin(node, **ON)
    idle = node.ids["idle"]
    node.fault("setchannel", "error", code=-1, message="Channel is not in a state to be updated",
               when=lambda p: isinstance(p, dict) and "feeppm" not in p)
    result = plugin.call("revenue-adjust-fees")
    d = decision_of(result, idle)
    assert d["action"] == "set_failed" and d["applied"] is False
    assert "setchannel failed: Channel is not in a state to be updated" in d["reasons"]
    plugin.wait_for_log(rf"setchannel {idle} max-HTLC \d+ msat failed: .*not in a state")
    assert advertised(node, idle)[0] == TOP
    state = plugin.call("revenue-fees", {"scid": idle})["channels"][0]["controller_state"]
    assert state is None or state["last_broadcast_at"] is None      # no token spent on a failure
    node.clear_faults()
    assert decision_of(plugin.call("revenue-adjust-fees"), idle)["action"] == "set_htlc_max"   # retried
    assert advertised(node, idle)[0] < TOP
