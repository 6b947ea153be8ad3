"""The network's prices as the fee prior (issue 21): what other nodes charge into a peer,
read from gossip (listchannels destination=<peer>), where a channel's own evidence is thin."""
import dataclasses
import math
import time

import pytest

from modules import demand, network_prior
from modules.config import default_config
from modules.fee_controller import FeeInputs, FeeState, decide_all_fees
from modules.models import Channel
from modules.evidence import Evidence, PriceObservation
from modules.network_prior import GossipChannel, NetworkSummary
from plugin_harness import node_rpc, start_plugin
from simnode import SimNode

OURS = "02" + "aa" * 32
HOUR = 3600


# --- the summary (pure) ----------------------------------------------------------------------
def test_the_summary_leaves_out_our_own_and_disabled_channels():
    entries = [GossipChannel(OURS, 5, True),                     # ours: our fee, not the network's
               GossipChannel("02" + "01" * 32, 700, True),
               GossipChannel("02" + "02" * 32, 800, True),
               GossipChannel("02" + "03" * 32, 50_000, False),   # disabled: nobody routes there
               GossipChannel("02" + "04" * 32, 900, True)]
    summary = network_prior.summarize(entries, OURS, read_at=100.0)
    assert (summary.channels, summary.median_fee_ppm) == (3, 800)
    assert summary.usable and network_prior.usable(summary)
    assert summary.to_dict(now=160.0) == {"channels": 3, "median_fee_ppm": 800, "age_s": 60, "used": True}
    assert summary.describe() == "network prior: 3 channels into this peer charge median 800 ppm"


def test_the_median_is_robust_and_too_few_channels_are_not_used():
    two = network_prior.summarize([GossipChannel("a", 100, True), GossipChannel("b", 300, True)], OURS, 0.0)
    assert (two.channels, two.median_fee_ppm, two.usable) == (2, 200, False)
    none = network_prior.summarize([GossipChannel(OURS, 100, True)], OURS, 0.0)
    assert (none.channels, none.median_fee_ppm, none.usable) == (0, None, False)
    odd = network_prior.summarize([GossipChannel(str(i), f, True) for i, f in enumerate((1, 400, 500, 600, 99_999))],
                                  OURS, 0.0)
    assert odd.median_fee_ppm == 500
    assert not network_prior.usable(None)


def test_reads_are_due_every_six_hours_at_most_and_capped_per_cycle():
    now = 100_000.0
    cache = {"fresh": NetworkSummary(3, 100, now - 60),
             "old": NetworkSummary(3, 100, now - network_prior.REFRESH_SECONDS - 1),
             "older": NetworkSummary(3, 100, now - 2 * network_prior.REFRESH_SECONDS)}
    peers = ["fresh", "old", "new1", "older", "new2", "new1"]
    assert network_prior.peers_to_read(peers, cache, now) == ["new1", "new2", "older", "old"]
    assert network_prior.peers_to_read(peers, cache, now, limit=3) == ["new1", "new2", "older"]
    many = [f"p{i}" for i in range(120)]
    assert len(network_prior.peers_to_read(many, {}, now)) == network_prior.MAX_READS_PER_CYCLE == 50


# --- the demand prior (pure) -------------------------------------------------------------------
def _scale_median(curve):
    return curve.quantile_scale_ppm(0.5)


def test_thin_evidence_starts_from_the_network_and_its_own_evidence_overrides_it():
    thin = Evidence(observations=(PriceObservation(100, 24.0, 1.0),), arrivals=1, amount_msat=50_000_000, hours=24.0)
    without = demand.estimate_all({"c": thin}, {"c": 100})["c"]
    with_net = demand.estimate_all({"c": thin}, {"c": 100}, {"c": 800})["c"]
    assert _scale_median(without) < 400 < _scale_median(with_net)
    assert abs(math.log(_scale_median(with_net) / 800)) < math.log(2)
    # a month of steady demand at two fees: a price scale near 150 ppm, whatever the network says
    rich = Evidence(observations=(PriceObservation(100, 400.0, 400 * 2.0), PriceObservation(200, 400.0, 400 * 2.0 * math.exp(-100 / 150))),
                    arrivals=1300, amount_msat=50_000_000, hours=800.0)
    own = demand.estimate_all({"c": rich}, {"c": 150})["c"]
    informed = demand.estimate_all({"c": rich}, {"c": 150}, {"c": 800})["c"]
    assert abs(math.log(_scale_median(informed) / _scale_median(own))) < math.log(1.2)
    assert _scale_median(informed) < 300


def test_no_network_summary_leaves_the_estimate_as_it_was():
    ev = Evidence(observations=(PriceObservation(100, 48.0, 5.0),), arrivals=5, amount_msat=50_000_000, hours=48.0)
    assert demand.estimate_all({"c": ev}, {"c": 100}) == demand.estimate_all({"c": ev}, {"c": 100}, {})


# --- through the plugin ----------------------------------------------------------------------------
NETWORK_FEES = [700, 780, 800, 820, 900, 50_000]
NETWORK_ACTIVE = [True, True, True, True, True, False]    # the 50 000 ppm one is disabled


@pytest.fixture
def node(tmp_path):
    """`new`: a channel opened just now at 100 ppm, to a peer the network reaches at ~800 ppm;
    `quiet`: the same, to a peer no other node has a channel into; `busy`: HTLC slots nearly
    full (priced at the ceiling whatever gossip says)."""
    with SimNode(str(tmp_path)) as sim:
        sim.ids = {"new": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100),
                   "quiet": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100),
                   "busy": sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=100,
                                           htlcs_in_use=450, max_htlcs=483)}
        sim.set_network_fees(sim.channel(sim.ids["new"])["peer_id"], NETWORK_FEES, NETWORK_ACTIVE)
        yield sim


def decision_of(result, scid):
    return next(d for d in result["decisions"] if d["short_channel_id"] == scid)


def fees_row(plugin, scid):
    return plugin.call("revenue-fees", {"scid": scid})["channels"][0]


def test_a_new_channel_starts_at_what_the_network_charges_into_its_peer(node):
    plugin = start_plugin(node)
    result = plugin.call("revenue-adjust-fees")
    new = node.ids["new"]
    decision = decision_of(result, new)
    assert decision["action"] == "set" and decision["new_fee_ppm"] == 800
    assert node.channel(new)["fee_ppm"] == 800
    why = " ".join(decision["reasons"])
    assert "; network prior: 5 channels into this peer charge median 800 ppm" in why   # ours, disabled: out
    assert "starts at the network's median 800 ppm" in why
    row = fees_row(plugin, new)
    assert row["network_prior"]["channels"] == 5 and row["network_prior"]["median_fee_ppm"] == 800
    assert row["network_prior"]["used"] is True and 0 <= row["network_prior"]["age_s"] < 60
    assert "network prior: 5 channels" in row["last_decision"]["stages"][0]["reason"]
    assert row["controller_state"]["start_fee_ppm"] == 800          # silence's floor: half of it
    # once set it stays: nothing new was learnt, and the summary is not read again within 6 h
    reads = len(node.calls_of("listchannels"))
    again = plugin.call("revenue-adjust-fees")
    assert decision_of(again, new)["new_fee_ppm"] == 800 and decision_of(again, new)["action"] != "set"
    assert len(node.calls_of("listchannels")) == reads


def test_without_gossip_nothing_changes(node):
    plugin = start_plugin(node)
    result = plugin.call("revenue-adjust-fees")
    quiet = node.ids["quiet"]
    decision = decision_of(result, quiet)
    assert decision["action"] == "hold" and node.channel(quiet)["fee_ppm"] == 100
    assert "network prior" not in " ".join(decision["reasons"])
    row = fees_row(plugin, quiet)
    assert row["network_prior"] == {"channels": 0, "median_fee_ppm": None, "age_s": row["network_prior"]["age_s"],
                                    "used": False}
    # our own channel into the peer is in the gossip, and left out
    peer = node.channel(quiet)["peer_id"]
    gossip = node_rpc(node).call("listchannels", {"destination": peer})["channels"]
    assert [(c["source"], c["short_channel_id"]) for c in gossip] == [(node.node_id, quiet)]


def test_a_failing_listchannels_stops_the_reads_and_the_cycle_sets_fees(node):
    node.fault("listchannels", "error", code=-1, message="injected listchannels failure")
    plugin = start_plugin(node)
    result = plugin.call("revenue-adjust-fees")
    assert result["cycle"]["failed"] == 0
    assert decision_of(result, node.ids["busy"])["new_fee_ppm"] == 2500          # fees still set
    new = decision_of(result, node.ids["new"])
    assert new["action"] == "hold" and "network prior" not in " ".join(new["reasons"])
    assert len(node.calls_of("listchannels")) == 1                               # the first failure stops them
    plugin.wait_for_log(r"Network fees: reading gossip failed .*injected listchannels failure.*3 peers")
    prior = fees_row(plugin, node.ids["new"])["network_prior"]
    assert prior is None or (prior["used"] is False and prior["median_fee_ppm"] is None)
    # next cycle: read again (the channel is no longer new to the controller: the prior
    # informs its demand, the start fee stays where it was)
    node.clear_faults()
    result = plugin.call("revenue-adjust-fees")
    assert len(node.calls_of("listchannels")) == 4
    assert "network prior: 5 channels" in " ".join(decision_of(result, node.ids["new"])["reasons"])
    assert plugin.call("revenue-status")["phase"] == "running"


def test_at_most_fifty_reads_a_cycle(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        scids = sim.add_random_channels(60, seed=3)
        for scid in scids[:5]:
            sim.set_network_fees(sim.channel(scid)["peer_id"], [300, 400, 500])
        plugin = start_plugin(sim)
        t0 = time.monotonic()
        plugin.call("revenue-adjust-fees")
        assert time.monotonic() - t0 < 30
        first = sim.calls_of("listchannels")
        assert len(first) == 50 and len({c["destination"] for c in first}) == 50
        plugin.call("revenue-adjust-fees")
        second = sim.calls_of("listchannels")[50:]
        assert len(second) == 10
        assert {c["destination"] for c in first} | {c["destination"] for c in second} == \
            {sim.channel(s)["peer_id"] for s in scids}
        plugin.call("revenue-adjust-fees")
        assert len(sim.calls_of("listchannels")) == 60                           # all fresh: none read
        rows = {c["short_channel_id"]: c["network_prior"] for c in plugin.call("revenue-fees")["channels"]}
        assert all(rows[s]["channels"] == 3 and rows[s]["median_fee_ppm"] == 400 for s in scids[:5])
        assert all(rows[s]["channels"] == 0 for s in scids[5:])
        assert len(sim.calls_of("getinfo")) == 1                                 # our id: read once


# --- the cold start (pure) -------------------------------------------------------------------------
def test_the_cold_start_is_bounded_by_the_options_and_needs_a_new_channel_without_history():
    now = 1_700_000_000.0
    cfg = dataclasses.replace(default_config(), max_fee_ppm=500)
    ch = Channel("800000x1x0", "02" + "b" * 64, "CHANNELD_NORMAL", 2_000_000_000, 1_000_000_000, 1_000_000_000,
                 1_000_000_000, 0, 100, "local", 0, 483, True)
    net = NetworkSummary(4, 800, now)
    d, = decide_all_fees([FeeInputs(ch, None, Evidence(), network=net)], {}, cfg, now)
    assert d.action == "set" and d.new_fee_ppm == 500                    # never above max-fee-ppm
    assert d.new_state.start_fee_ppm == 500
    # known to the controller already, or a day of its own silence: no cold start
    kept = {ch.short_channel_id: FeeState(100, fee_since=now - 3600, start_fee_ppm=100)}
    d, = decide_all_fees([FeeInputs(ch, None, Evidence(), network=net)], kept, cfg, now)
    assert d.new_fee_ppm == 100
    quiet = Evidence(observations=(PriceObservation(100, 48.0, 0.0),), hours=48.0)
    d, = decide_all_fees([FeeInputs(ch, None, quiet, network=net)], {}, cfg, now)
    assert d.new_fee_ppm <= 100 and "starts at the network" not in " ".join(d.reasons)
    # too few channels: no prior, no cold start
    d, = decide_all_fees([FeeInputs(ch, None, Evidence(), network=NetworkSummary(2, 800, now))], {}, cfg, now)
    assert d.new_fee_ppm == 100 and "network prior" not in " ".join(d.reasons)


def test_a_peer_whose_gossip_always_fails_does_not_keep_the_others_from_their_first_read():
    from types import SimpleNamespace
    from modules.fee_cycle import FeeCycle
    from modules.node import NodeError

    class Node:
        reads = []

        def node_id(self):
            return "02" + "0" * 64

        def network_fees_ppm(self, peer):
            self.reads.append(peer)
            if peer == "bad":
                raise NodeError("listchannels", None, "timed out")
            return [network_prior.GossipChannel("03" + str(i) * 64, 200, True) for i in range(3)]

    cycle = SimpleNamespace(node=Node(), network={}, log=lambda *a: None)
    peers = ["bad", "a", "b"]
    FeeCycle._read_network(cycle, peers, 1_000.0)          # "bad" first: it fails, reads stop
    assert Node.reads == ["bad"] and not cycle.network["bad"].usable
    FeeCycle._read_network(cycle, peers, 1_060.0)          # the others now go first
    assert Node.reads[1:3] == ["a", "b"] and cycle.network["a"].usable and cycle.network["b"].usable


def test_gossip_entries_without_a_readable_fee_are_skipped_not_read_as_zero(monkeypatch):
    from modules.node import NodeAdapter, NodeError
    node = NodeAdapter.__new__(NodeAdapter)
    peer = "02" + "c" * 64
    entries = [{"source": "03" + "1" * 64, "destination": peer, "fee_per_millionth": 100, "active": True},
               {"source": "03" + "2" * 64, "destination": peer, "fee_per_millionth": 120, "active": True},
               {"source": "03" + "3" * 64, "destination": peer, "active": True},
               {"source": "03" + "4" * 64, "destination": peer, "fee_per_millionth": "1.5", "active": True},
               "not an entry"]
    monkeypatch.setattr(node, "call", lambda method, params=None: {"channels": entries}, raising=False)
    read = node.network_fees_ppm(peer)
    assert [c.fee_ppm for c in read] == [100, 120]
    monkeypatch.setattr(node, "call", lambda method, params=None: {"channels": None}, raising=False)
    with pytest.raises(NodeError):
        node.network_fees_ppm(peer)
