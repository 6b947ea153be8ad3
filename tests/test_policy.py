"""Peer policies and runtime options, the pure parts: checking a policy, what it does to the
fee decision and the rebalance plan, a config changed at runtime, a loop's new interval."""
import dataclasses
import threading
import time

import pytest

from modules import policy as pp
from modules.config import ConfigError, config_with, default_config, option_values
from modules.errors import UserError
from modules.evidence import Evidence, PriceObservation
from modules.fee_controller import (A_HOLD, A_SET, A_SKIP_INACTIVE, A_SKIP_POLICY, FeeInputs, FeeState,
                                    decide_all_fees)
from modules.models import SINK, SOURCE, Channel, ChannelFlow
from modules.rebalance_decisions import DESTINATION, SOURCE_ROLE, plan_rebalances
from modules.scheduler import Loop

CFG = default_config("/ld")
HTLC_ON = dataclasses.replace(CFG, manage_htlc_max=True)   # max-HTLC is off by default
NOW = 1_700_000_000.0
PEER = "02" + "a" * 64
OTHER = "03" + "b" * 64


def build(**kw):
    args = dict(peer_id=PEER, strategy=None, fee_ppm=None, min_fee_ppm=None, max_fee_ppm=None,
                rebalance=None, expires_hours=None, now=NOW)
    args.update(kw)
    return pp.build_policy(**args)


def chan(scid="800000x1x0", peer=PEER, fee=100, local_ratio=0.5, capacity=2_000_000_000, **kw):
    local = int(capacity * local_ratio)
    return Channel(scid, peer, kw.pop("state", "CHANNELD_NORMAL"), capacity, local, local, capacity - local,
                   0, fee, "local", kw.pop("htlcs_in_use", 0), 483, kw.pop("connected", True))


def busy_evidence():
    """Forwards every hour at 100 and 300 ppm: a channel with demand."""
    obs = (PriceObservation(100, 300, 150), PriceObservation(300, 300, 90))
    return Evidence(obs, 240, 0, 240 * 100_000_000, 0.0, 0.0, 600)


# --- checking a policy ----------------------------------------------------------------------
def test_a_policy_takes_its_defaults_and_an_absolute_expiry():
    p = build()
    assert (p.strategy, p.rebalance, p.expires_at, p.updated_at) == ("dynamic", "allow", None, NOW)
    p = build(peer_id=PEER.upper().replace("0X", "0x"), strategy="static", fee_ppm=0, expires_hours=1.5)
    assert p.peer_id == PEER and p.fee_ppm == 0 and p.expires_at == NOW + 5400
    assert p.active(NOW + 5399) and not p.active(NOW + 5400)
    assert build(strategy="passive").rebalance == "never"
    assert build(strategy="passive", rebalance="never").rebalance == "never"


@pytest.mark.parametrize("kw,message", [
    ({"peer_id": None}, "peer_id must be a node id string"),
    ({"peer_id": "02" + "g" * 64}, "malformed node id"),
    ({"peer_id": "02" + "a" * 65}, "66 hex characters starting 02 or 03"),
    ({"strategy": "Static"}, "strategy must be one of dynamic, static, passive"),
    ({"strategy": "static"}, "strategy static needs fee_ppm"),
    ({"strategy": "static", "fee_ppm": 100_001}, "fee_ppm must be between 0 and 100000 ppm"),
    ({"fee_ppm": 10}, "fee_ppm is for strategy static only"),
    ({"min_fee_ppm": 5.0}, "min_fee_ppm must be a whole number of ppm, got a number 5.0"),
    ({"min_fee_ppm": 11, "max_fee_ppm": 10}, "min_fee_ppm (11) must not exceed max_fee_ppm (10)"),
    ({"strategy": "static", "fee_ppm": 5, "max_fee_ppm": 10}, "max_fee_ppm is for strategy dynamic only"),
    ({"rebalance": "none"}, "rebalance must be one of allow, never, source-only, destination-only"),
    ({"strategy": "passive", "rebalance": "destination-only"}, "does not go with strategy passive"),
    ({"expires_hours": float("inf")}, "expires_hours must be more than 0"),
    ({"expires_hours": False}, "expires_hours must be a number of hours, got a boolean"),
])
def test_every_bad_setting_is_named(kw, message):
    with pytest.raises(UserError) as err:
        build(**kw)
    assert message in err.value.message and err.value.code == -32602


def test_the_sub_command_takes_what_it_needs():
    assert pp.check_action("list", None, {"strategy": None}) == "list"
    assert pp.check_action("set", PEER, {"strategy": "static"}) == "set"
    for action, peer, settings, message in [
            ("get", None, {}, "peer_id is missing"), ("list", PEER, {}, "peer_id is not for list"),
            ("delete", PEER, {"fee_ppm": 1}, "fee_ppm is for set only, not for delete"),
            (None, PEER, {}, "action is missing"), (["set"], PEER, {}, "got an array")]:
        with pytest.raises(UserError, match=message):
            pp.check_action(action, peer, settings)


def test_a_peer_is_known_by_a_channel_that_is_not_closing():
    channels = [chan("1x1x0", PEER, state="ONCHAIN"), chan("2x1x0", OTHER, state="CHANNELD_AWAITING_LOCKIN"),
                chan("3x1x0", OTHER, state="CLOSINGD_COMPLETE")]
    assert pp.known_peers(channels) == {OTHER}


# --- the fee decision -----------------------------------------------------------------------
def test_static_sets_its_fee_at_once_then_holds_and_passive_changes_nothing():
    static = build(strategy="static", fee_ppm=420)
    passive = build(peer_id=OTHER, strategy="passive")
    inputs = [FeeInputs(chan("1x1x0", fee=100), None, busy_evidence(), policy=static),
              FeeInputs(chan("1x2x0", fee=90), None, busy_evidence(), policy=static),
              FeeInputs(chan("2x1x0", OTHER, fee=100, htlcs_in_use=480), None, busy_evidence(), policy=passive)]
    # a broadcast a minute ago and no gossip budget left: static is urgent all the same
    states = {"1x1x0": FeeState(100, last_broadcast_at=NOW - 60, gossip_tokens=0.0, gossip_tokens_at=NOW)}
    first = {d.short_channel_id: d for d in decide_all_fees(inputs, states, HTLC_ON, NOW)}
    for scid in ("1x1x0", "1x2x0"):
        d = first[scid]
        assert (d.action, d.new_fee_ppm, d.reasons[0]) == (A_SET, 420, "peer policy: static 420 ppm")
        assert d.new_state.fee_ppm == 420 and d.curve is None        # the rebalancer values it at its fee
    p = first["2x1x0"]
    assert (p.action, p.new_fee_ppm, p.old_fee_ppm) == (A_SKIP_POLICY, 100, 100)
    assert p.reasons[0].startswith("peer policy: passive") and [s.stage for s in p.stages] == ["policy", "gossip", "htlc_max"]
    assert p.new_htlc_max_msat is None and "passive" in p.stages[-1].reason   # its max-HTLC alone too
    held = [dataclasses.replace(i, channel=dataclasses.replace(i.channel, fee_ppm=420)) for i in inputs[:2]]
    states = {d.short_channel_id: d.new_state for d in first.values()}
    again = decide_all_fees(held, states, HTLC_ON, NOW + 60)
    assert [(d.action, d.new_fee_ppm) for d in again] == [(A_HOLD, 420), (A_HOLD, 420)]
    offline = [FeeInputs(chan(fee=100, connected=False), None, busy_evidence(), policy=static)]
    assert decide_all_fees(offline, {}, CFG, NOW)[0].action == A_SKIP_INACTIVE


def test_a_dynamic_policy_narrows_the_bounds_of_every_stage_and_says_so():
    ev = busy_evidence()
    congested = chan(fee=100, htlcs_in_use=480)
    capped = build(max_fee_ppm=700)
    d = decide_all_fees([FeeInputs(congested, None, ev, policy=capped)], {}, CFG, NOW)[0]
    assert d.new_fee_ppm == 700 and d.action == A_SET             # the congestion ceiling is the peer's
    bounds = next(s for s in d.stages if s.stage == "bounds")
    assert bounds.reason.endswith("; peer policy: max 700 ppm")
    floored = decide_all_fees([FeeInputs(chan(fee=100), None, ev, policy=build(min_fee_ppm=1800))], {}, CFG, NOW)[0]
    assert floored.new_fee_ppm >= 1800 and all(s.fee_ppm >= 1800 for s in floored.stages[1:])
    # a policy floor above the options' ceiling: the policy wins, and says so
    above = decide_all_fees([FeeInputs(chan(fee=100), None, ev, policy=build(min_fee_ppm=4000))], {}, CFG, NOW)[0]
    assert above.new_fee_ppm == 4000 and "the policy wins" in " ".join(above.reasons)


def test_the_refill_cost_never_lifts_a_fee_above_a_policy_ceiling():
    ev = busy_evidence()
    # short of balance, priced for scarcity above what refills cost: the refill cost floors it
    inputs = FeeInputs(chan(fee=100, local_ratio=0.05), None, ev, rebalance_cost_ppm=500, refills_available=True)
    without = decide_all_fees([inputs], {}, CFG, NOW)[0]
    assert without.target_fee_ppm >= 500 and "refill cost 500 ppm" in " ".join(without.reasons)
    # a peer policy's ceiling below that cost: refills do not pay under it, the policy wins
    d = decide_all_fees([dataclasses.replace(inputs, policy=build(max_fee_ppm=400))], {}, CFG, NOW)[0]
    bounds = next(s for s in d.stages if s.stage == "bounds")
    assert d.target_fee_ppm <= 400 and bounds.fee_ppm <= 400
    assert "refill cost 500 ppm no floor: its price does not count on refills" in bounds.reason


def test_fee_bounds_take_the_tighter_and_let_a_contradicting_policy_win():
    assert pp.fee_bounds(1, 2500, None) == (1, 2500, None)
    assert pp.fee_bounds(1, 2500, build(strategy="static", fee_ppm=5)) == (1, 2500, None)
    assert pp.fee_bounds(10, 2500, build(min_fee_ppm=5, max_fee_ppm=900))[:2] == (10, 900)
    assert pp.fee_bounds(100, 2500, build(max_fee_ppm=50))[:2] == (50, 50)
    assert pp.fee_bounds(100, 2500, build(min_fee_ppm=3000, max_fee_ppm=4000))[:2] == (3000, 3000)


# --- the rebalance plan ---------------------------------------------------------------------
SAT = 1000


def rb_channel(scid, peer, local_sats, fee_ppm):
    cap, local = 10_000_000 * SAT, local_sats * SAT
    return Channel(scid, peer, "CHANNELD_NORMAL", cap, local, local, cap - local, 0, fee_ppm, "local", 0, 30, True)


def rb_flow(scid, state, volume_sats, out_sats):
    return ChannelFlow(scid, 0, 0, 0, 0, 0, 0.0, volume_sats * SAT, out_sats * SAT, state, NOW)


def test_policies_keep_channels_out_of_a_role_with_the_reason():
    dest = rb_channel("1x1x0", "02" + "1" * 64, 200_000, 1000)
    src_a = rb_channel("2x1x0", "02" + "2" * 64, 1_200_000, 100)   # each gives 700 k: both are needed
    src_b = rb_channel("3x1x0", "02" + "3" * 64, 1_200_000, 100)
    channels = [dest, src_a, src_b]
    flows = {"1x1x0": rb_flow("1x1x0", SOURCE, 600_000, 500_000), "2x1x0": rb_flow("2x1x0", SINK, 100_000, 10_000),
             "3x1x0": rb_flow("3x1x0", SINK, 100_000, 10_000)}
    fees = {c.short_channel_id: c.fee_ppm for c in channels}

    def plan(policies):
        no_source, no_destination = pp.rebalance_exclusions(channels, policies)
        return {d.short_channel_id: d for d in plan_rebalances(
            channels, flows, fees, {}, CFG, NOW, no_source=no_source, no_destination=no_destination)}

    free = plan({})
    assert free["1x1x0"].start and set(free["1x1x0"].candidates) == {"2x1x0", "3x1x0"}
    limited = plan({src_a.peer_id: build(peer_id=src_a.peer_id, rebalance="destination-only")})
    assert limited["1x1x0"].candidates == ("3x1x0",)
    assert limited["2x1x0"].role != SOURCE_ROLE
    assert "peer policy: rebalance destination-only: never a source" in limited["2x1x0"].reasons
    kept = plan({dest.peer_id: build(peer_id=dest.peer_id, strategy="passive")})
    assert kept["1x1x0"].role != DESTINATION and not kept["1x1x0"].start
    assert "peer policy: passive: never rebalanced" in kept["1x1x0"].reasons


# --- options at runtime -----------------------------------------------------------------------
def test_config_with_checks_one_new_value_like_the_start_and_keeps_the_rest():
    changed = config_with(CFG, "revenue-ops-max-fee-ppm", "3000")
    assert changed.max_fee_ppm == 3000 and changed.db_path == CFG.db_path
    assert option_values(changed) == dict(option_values(CFG), **{"revenue-ops-max-fee-ppm": 3000})
    assert config_with(CFG, "revenue-ops-dry-run", "true").dry_run is True
    for name, raw, message in [
            ("revenue-ops-max-fee-ppm", "x", "expected int from 1 to 100000; revenue-ops-max-fee-ppm stays 2500"),
            ("revenue-ops-max-fee-ppm", None, "needs a value (int from 1 to 100000); it stays 2500"),
            ("revenue-ops-db-path", "/elsewhere.db", "read only at start-up"),
            ("revenue-ops-nonsense", "1", "unknown option revenue-ops-nonsense"),
            ("revenue-ops-max-fee-ppm", "0.5", "expected int")]:
        with pytest.raises(ConfigError) as err:
            config_with(CFG, name, raw)
        assert message in str(err.value)


def test_a_new_interval_shortens_the_wait_under_way():
    ran = threading.Event()
    loop = Loop("fee", ran.set, interval_seconds=3600)
    loop.start()
    time.sleep(0.05)
    loop.set_interval(0.2, 0.0)
    assert ran.wait(3)
    loop.stop()


def test_a_new_interval_lengthens_the_wait_under_way_and_run_now_still_wakes_it():
    runs = []
    loop = Loop("fee", lambda: runs.append(1), interval_seconds=0.3)
    loop.start()
    loop.set_interval(3600, 0.0)
    time.sleep(0.6)
    assert runs == []
    assert loop.run_now(wait=True, timeout=3) and runs == [1]
    loop.stop()


def test_an_interval_set_before_the_start_keeps_the_first_delay():
    ran = threading.Event()
    loop = Loop("flow", ran.set, interval_seconds=3600)
    loop.set_interval(7200, 0.0)
    loop.start(first_delay=0)
    assert ran.wait(3)
    loop.stop()
