"""The fee decision: each stage, decide_fee as a whole, several channels to one peer,
state pruning, and properties that must hold for any input."""
import dataclasses
import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modules import fee_stages
from modules.config import default_config
from modules.fee_controller import (FeeInputs, FeeState, decide_all_fees, decide_fee,
                                    decide_peer_fees, prune_state)
from modules.fee_stages import (CLIMB, PROBE, SETTLED, Observation, compare, scarcity_factor,
                                settle_hours)
from modules.models import BALANCED, IDLE, SINK, SOURCE, Channel, ChannelFlow

CFG = default_config()
T0 = 1_700_000_000.0
H = 3600.0
AMOUNT_MSAT = 1_000_000_000          # 1M sat per forward in these tests
MIN_H = CFG.fee_min_observation_hours
MAX_H = fee_stages.max_observation_hours(CFG)


def chan(fee=100, local_ratio=0.5, scid="700000x1x0", peer="02aa", **kw) -> Channel:
    capacity = 10_000_000_000
    fields = dict(short_channel_id=scid, peer_id=peer, state="CHANNELD_NORMAL",
                  capacity_msat=capacity, local_msat=int(capacity * local_ratio),
                  spendable_msat=int(capacity * local_ratio),
                  receivable_msat=int(capacity * (1 - local_ratio)), fee_base_msat=0,
                  fee_ppm=fee, opener="local", htlcs_in_use=0, max_htlcs=483, peer_connected=True)
    fields.update(kw)
    return Channel(**fields)


def flow(state=BALANCED, scid="700000x1x0", ratio=0.0) -> ChannelFlow:
    return ChannelFlow(scid, 10**9, 10**9, 10**6, 10, 10, ratio, 10**9, 5 * 10**8, state, T0)


def inputs(ch=None, forwards=0, earned=None, fl=None, routed=True, cost=None, **kw) -> FeeInputs:
    ch = ch or chan(**kw)
    if earned is None:
        earned = forwards * ch.fee_ppm * AMOUNT_MSAT // 10**6
    return FeeInputs(ch, fl, earned, routed, cost, forwards)


def observed(state: FeeState, hours: float, forwards: int, ch=None, **kw):
    """decide_fee after `hours` at the state's fee with `forwards` forwards."""
    ch = ch or chan(fee=state.fee_ppm, **kw)
    return decide_fee(inputs(ch, forwards), state, CFG, state.last_change_at + hours * H)


def fresh(fee=100, fl=None, at=T0) -> FeeState:
    return FeeState.initial(fee, at, CFG, fl)


def after_first_probe(forwards_at_100=60) -> FeeState:
    d = observed(fresh(), MIN_H, forwards_at_100)
    assert d.action == "set"
    return d.new_state


# --- 1. observe ------------------------------------------------------------------------------
def test_a_new_channel_is_observed_before_anything_changes():
    d = decide_fee(inputs(fee=250, forwards=99), None, CFG, T0)
    assert d.action == "skip_observing" and d.new_fee_ppm == 250
    assert d.new_state.fee_ppm == 250 and d.new_state.last_change_at == T0
    assert any("new to the controller" in r for r in d.reasons)


def test_no_move_before_the_observation_time_and_the_reason_says_how_long_is_left():
    d = observed(fresh(), 2.0, 500)
    assert d.action == "skip_observing" and d.new_fee_ppm == 100
    assert any("4.0 h left" in r for r in d.reasons)
    assert d.new_state == fresh()


# --- 2. hill climb ---------------------------------------------------------------------------
def test_first_probe_goes_up_once_the_reference_is_measured():
    d = observed(fresh(), MIN_H, 60)
    assert d.action == "set" and d.new_fee_ppm == 145          # +45%: 3 x fee-step-percent
    assert d.new_state.reference.fee_ppm == 100 and d.new_state.direction == 1


def test_first_probe_of_a_sink_goes_down():
    state = fresh(fl=flow(SINK))
    d = decide_fee(inputs(chan(fee=100), 60, fl=flow(SINK)), state, CFG, T0 + MIN_H * H)
    assert d.action == "set" and d.new_fee_ppm < 100


def test_a_reference_with_few_forwards_is_measured_longer():
    d = observed(fresh(), MIN_H, 5)
    assert d.action == "hold" and d.new_fee_ppm == 100
    assert any("5 forwards so far" in r for r in d.reasons)


def test_higher_revenue_keeps_the_direction_and_widens_the_step():
    state = after_first_probe(60)                       # 100 ppm earned 10/h
    d = observed(state, MIN_H, 90)                      # 145 ppm: 15/h forwards, more revenue
    assert d.action == "set" and d.new_fee_ppm > 145 * 1.45
    assert d.new_state.direction == 1 and d.new_state.step_percent > state.step_percent
    assert d.new_state.reference.fee_ppm == 145


def test_lower_revenue_tries_the_other_side_of_the_reference_with_a_smaller_step():
    state = after_first_probe(60)
    d = observed(state, MIN_H, 10)                      # 145 ppm: revenue collapsed
    assert d.action == "set" and d.new_fee_ppm < 100    # other side of the 100 ppm reference
    assert d.new_state.direction == -1 and d.new_state.step_percent < state.step_percent
    assert d.new_state.reference.fee_ppm == 100 and d.new_state.bracketed


def test_an_unclear_difference_is_observed_longer_not_acted_on():
    state = after_first_probe(60)
    d = observed(state, MIN_H, 41)                      # 145 ppm, slightly less revenue
    assert d.action == "hold" and d.new_fee_ppm == 145
    assert any("unclear" in r for r in d.reasons)


def test_still_flat_after_the_longest_observation_settles_half_way():
    state = after_first_probe(60)
    forwards = round(60 * (MAX_H / MIN_H) * 100 / 145)   # same revenue per hour at 145 ppm
    d = observed(state, MAX_H, forwards)
    assert d.action == "set" and d.new_state.mode == SETTLED
    assert 100 < d.new_fee_ppm < 145 and d.new_fee_ppm == round(math.sqrt(100 * 145))


def test_a_probe_from_a_settled_fee_that_does_worse_goes_back_and_settles():
    settled = dataclasses.replace(fresh(200), mode=SETTLED, settled_at=T0)
    d = observed(settled, settle_hours(0), 200)
    assert d.action == "set" and d.new_state.mode == PROBE
    probe = d.new_state
    back = observed(probe, MIN_H, 10)
    assert back.action == "set" and back.new_fee_ppm == 200 and back.new_state.mode == SETTLED
    assert back.new_state.confirmations == 1


def test_a_settled_fee_stays_put_and_probes_less_often_each_time_it_is_confirmed():
    settled = dataclasses.replace(fresh(200), mode=SETTLED, settled_at=T0, confirmations=1)
    for hours in (1, 12, 30, settle_hours(1) - 1):
        d = observed(settled, hours, int(hours * 10))
        assert d.action in ("hold", "skip_observing") and d.new_fee_ppm == 200
    assert settle_hours(1) == 2 * settle_hours(0)
    assert observed(settled, settle_hours(1), int(settle_hours(1) * 10)).action == "set"


def test_a_demand_shift_while_settled_is_followed_at_once():
    settled = dataclasses.replace(fresh(800), mode=SETTLED, settled_at=T0, confirmations=3)
    d = observed(settled, 48, 480)                      # 10/h for two days
    assert d.action == "hold" and d.new_state.checkpoint is not None
    d = observed(d.new_state, 48 + fee_stages.SHIFT_WINDOW_HOURS, 480)   # then nothing
    assert d.action == "set" and d.new_fee_ppm < 800
    assert any("demand shifted" in r for r in d.reasons)


@pytest.mark.parametrize("fee,expected", [(5, "up"), (1500, "down"), (100, "hold")])
def test_a_channel_that_earned_nothing_is_probed_by_its_price(fee, expected):
    state = fresh(fee)
    assert observed(state, MIN_H, 0).action == "hold"          # nothing yet: wait
    d = observed(state, MAX_H, 0)
    if expected == "up":
        assert d.action == "set" and d.new_fee_ppm > fee
    elif expected == "down":
        assert d.action == "set" and d.new_fee_ppm < fee
    else:
        assert d.action == "hold" and d.new_state.mode == SETTLED


def test_a_zero_revenue_trial_after_a_busy_reference_is_clearly_worse():
    week = Observation(100, 100, 10**6, 700, 168.0, T0)
    assert compare(Observation(100, 100, 0, 0, 24.0, T0), week) < -5
    # same revenue per hour at twice the fee with half the forwards: no difference
    assert abs(compare(Observation(200, 200, 10**6, 50, 10.0, T0),
                       Observation(100, 100, 10**6, 100, 10.0, T0))) < 0.01


# --- 3.-5. modifiers and bounds ----------------------------------------------------------------
@pytest.mark.parametrize("state,factor", [(SOURCE, 1.05), (SINK, 0.95), (BALANCED, 1.0), (IDLE, 1.0)])
def test_flow_bias_leans_sources_up_and_sinks_down(state, factor):
    result = fee_stages.flow_bias(1000, inputs(fl=flow(state)), CFG)
    assert result.fee_ppm == round(1000 * factor) and result.factor == factor


def test_scarcity_from_one_at_the_threshold_to_three_at_zero():
    assert scarcity_factor(0.35, 0.35) == 1.0 and scarcity_factor(0.9, 0.35) == 1.0
    assert scarcity_factor(0.0, 0.35) == 3.0
    assert scarcity_factor(0.175, 0.35) == pytest.approx(2.0)
    assert scarcity_factor(0.1, 0.0) == 1.0


def test_scarcity_raises_the_fee_of_a_drained_channel_and_pauses_the_climb():
    state = after_first_probe(60)
    d = observed(state, MIN_H, 90, local_ratio=0.0875)   # 1/4 of the threshold: x2.5
    assert d.action == "set" and d.new_fee_ppm == round(145 * 2.5)
    assert d.factors["scarcity"] == 2.5 and d.new_state.base_fee_ppm == 145
    assert d.new_state.regime == fee_stages.SCARCE and d.new_state.reference is None


def test_a_peer_opened_channel_that_never_routed_out_is_exempt_from_scarcity():
    ch = chan(local_ratio=0.05, opener="remote")
    assert fee_stages.scarcity(100, inputs(ch, routed=False), CFG).factor == 1.0
    assert fee_stages.scarcity(100, inputs(ch, routed=True), CFG).factor > 2.5
    assert fee_stages.scarcity(100, inputs(chan(local_ratio=0.05), routed=False), CFG).factor > 2.5


def test_htlc_congestion_prices_at_the_ceiling():
    d = observed(after_first_probe(60), MIN_H, 90, htlcs_in_use=400)
    assert d.action == "set" and d.new_fee_ppm == CFG.max_fee_ppm
    assert any("HTLC slots in use" in r for r in d.reasons)


def test_bounds_clamp_and_never_price_below_the_refill_cost():
    assert fee_stages.bounds(5000, inputs(), CFG).fee_ppm == CFG.max_fee_ppm
    assert fee_stages.bounds(0, inputs(), CFG).fee_ppm == CFG.min_fee_ppm
    assert fee_stages.bounds(100, inputs(cost=300), CFG).fee_ppm == 300
    assert fee_stages.bounds(100, inputs(cost=9000), CFG).fee_ppm == CFG.max_fee_ppm


def test_the_climb_does_not_go_below_the_refill_cost():
    state = after_first_probe(60)
    ch = chan(fee=145)
    d = decide_fee(inputs(ch, 10, cost=140), state, CFG, T0 + 2 * MIN_H * H)
    assert d.new_fee_ppm >= 140


def test_a_fee_outside_the_bounds_is_corrected_without_waiting():
    d = decide_fee(inputs(fee=4000), fresh(4000), CFG, T0 + 60)
    assert d.action == "set" and d.new_fee_ppm == CFG.max_fee_ppm


# --- 7. gossip hysteresis ------------------------------------------------------------------------
def test_a_small_change_is_not_broadcast():
    # settled at 105 ppm = 100 x1.05 while a SOURCE; the flow turns BALANCED: 100 ppm is -4.8%
    state = dataclasses.replace(fresh(105, fl=flow(SOURCE)), mode=SETTLED, settled_at=T0)
    assert state.base_fee_ppm == 100
    d = decide_fee(inputs(chan(fee=105), 60, fl=flow(BALANCED)), state, CFG, T0 + MIN_H * H)
    assert d.action == "skip_hysteresis" and d.new_fee_ppm == 105 and d.target_fee_ppm == 100
    assert any("below the 5%" in r for r in d.reasons)
    # a bigger swing, to a SINK (x0.95), is worth it
    d = decide_fee(inputs(chan(fee=105), 60, fl=flow(SINK)), state, CFG, T0 + MIN_H * H)
    assert d.action == "set" and d.new_fee_ppm == 95


def test_a_change_too_soon_after_the_last_broadcast_waits_without_advancing_the_climb():
    cfg = default_config(fee_broadcast_min_interval_seconds=12 * 3600)
    state = dataclasses.replace(fresh(), last_broadcast_at=T0)
    now = T0 + MIN_H * H
    d = decide_fee(inputs(chan(fee=100), 60), state, cfg, now)
    assert d.action == "skip_hysteresis" and d.new_fee_ppm == 100
    assert d.new_state == state            # nothing judged as if the fee had changed
    assert any("last broadcast 6.0 h ago" in r for r in d.reasons)
    later = decide_fee(inputs(chan(fee=100), 120), state, cfg, T0 + 12 * H)
    assert later.action == "set" and later.new_fee_ppm == 145


def test_a_climb_stopped_by_the_ceiling_settles_instead_of_retrying():
    cfg = default_config(max_fee_ppm=150)
    state = dataclasses.replace(fresh(150), reference=Observation(100, 100, 6 * 10**7, 60, 6.0, T0))
    d = decide_fee(inputs(chan(fee=150), 90), state, cfg, T0 + MIN_H * H)
    assert d.action == "hold" and d.new_fee_ppm == 150 and d.new_state.mode == SETTLED


def test_a_fee_set_outside_the_controller_is_adopted_and_observed():
    state = after_first_probe(60)                            # controller set 145
    d = decide_fee(inputs(chan(fee=300), 90), state, CFG, state.last_change_at + 7 * H)
    assert d.action == "skip_observing" and d.new_state.fee_ppm == 300
    assert d.new_state.last_change_at == state.last_change_at + 7 * H
    assert any("changed outside the controller" in r for r in d.reasons)


def test_an_inactive_channel_is_left_alone():
    d = decide_fee(inputs(chan(peer_connected=False), 60), fresh(), CFG, T0 + 10 * H)
    assert d.action == "skip_inactive" and d.new_fee_ppm == 100


def test_decisions_explain_every_stage():
    d = observed(after_first_probe(60), MIN_H, 90)
    assert [s.stage for s in d.stages] == ["observe", "hill_climb", "flow_bias", "scarcity",
                                          "congestion", "bounds", "hysteresis"]
    assert all(s.reason for s in d.stages) and set(d.factors) >= {"hill_climb", "scarcity"}
    json.dumps(d.to_dict())


def test_state_survives_a_json_round_trip():
    state = observed(after_first_probe(60), MIN_H, 10).new_state
    assert state.reference is not None
    assert FeeState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


# --- several channels to one peer, pruning -------------------------------------------------------
def test_channels_to_one_peer_get_one_fee_decided_on_their_sum():
    a = chan(scid="700000x1x0", fee=100)
    b = chan(scid="700001x2x0", fee=100)
    state = fresh()
    states = {"700000x1x0": state, "700001x2x0": state}
    # 30 forwards each: alone neither would count as a measured reference (< 30 + 30)
    members = [inputs(a, 20), inputs(b, 20)]
    decisions = decide_peer_fees(members, states, CFG, T0 + MIN_H * H)
    assert [d.action for d in decisions] == ["set", "set"]
    assert {d.new_fee_ppm for d in decisions} == {145}
    assert decisions[0].new_state == decisions[1].new_state
    alone = decide_fee(members[0], state, CFG, T0 + MIN_H * H)
    assert alone.action == "hold"


def test_a_new_channel_to_a_peer_is_aligned_with_the_peer_fee():
    old = chan(scid="700000x1x0", fee=300)
    new = chan(scid="800000x1x0", fee=1)
    decisions = decide_all_fees([inputs(new, 0), inputs(old, 3)],
                                {"700000x1x0": fresh(300)}, CFG, T0 + H)
    by_scid = {d.short_channel_id: d for d in decisions}
    assert by_scid["700000x1x0"].action == "skip_observing"
    assert by_scid["800000x1x0"].action == "set" and by_scid["800000x1x0"].new_fee_ppm == 300


def test_an_inactive_channel_to_a_peer_is_not_touched():
    a = chan(scid="700000x1x0", fee=100)
    b = chan(scid="700001x1x0", fee=100, state="CHANNELD_SHUTTING_DOWN")
    decisions = decide_peer_fees([inputs(a, 60), inputs(b, 0)], {"700000x1x0": fresh()}, CFG,
                                 T0 + MIN_H * H)
    assert [d.action for d in decisions] == ["set", "skip_inactive"]
    assert decisions[1].new_fee_ppm == 100


def test_aggregated_peer_is_scarce_only_when_all_its_channels_together_are():
    full = chan(scid="700000x1x0", local_ratio=0.9)
    empty = chan(scid="700001x1x0", local_ratio=0.0)
    decisions = decide_peer_fees([inputs(full, 60), inputs(empty, 0)], {}, CFG, T0)
    assert all(d.factors.get("scarcity", 1.0) == 1.0 for d in decisions)


def test_prune_state_drops_closed_channels():
    states = {"1x1x0": fresh(), "2x1x0": fresh(), "3x1x0": fresh()}
    kept, removed = prune_state(states, ["1x1x0", "3x1x0", "9x9x9"])
    assert set(kept) == {"1x1x0", "3x1x0"} and removed == 1
    assert prune_state({}, []) == ({}, 0)


# --- convergence on a simulated channel ------------------------------------------------------------
def test_converges_near_the_optimum_and_then_stays_quiet():
    from simnode.market import ChannelSpec, ExponentialDemand, MarketSim, channel_records, custom_market
    from simnode.state import make_pubkey
    curve, idle = ExponentialDemand(8.0, 400.0), ExponentialDemand(1e-9, 1.0)
    ours = ChannelSpec("700000x1x0", make_pubkey("a"), 10**10, 6 * 10**9, "balanced", 0.0,
                       AMOUNT_MSAT // 4, (curve, curve), 50, 0.0)
    entry = ChannelSpec("700001x1x0", make_pubkey("b"), 10**10, 5 * 10**9, "balanced", 1.0,
                        AMOUNT_MSAT // 4, (idle, idle), 50, 0.0)
    shares, rates = [], []
    for seed in (1, 2, 3):
        market = custom_market([ours, entry], seed, days=20, drains=False)
        sim = MarketSim(market, channel_records(market))
        state, sets, marks = None, [], [(0.0, 0, 0)]     # (hour, earned msat, forwards) so far
        opt = ours.expected_msat_per_hour(400, 0)
        got = []
        for k in range(20 * 48):
            t = k * 0.5
            if t >= 7 * 24:
                got.append(ours.expected_msat_per_hour(sim.fee_ppm[0], 0) / opt)
            sim.advance((t + 0.5) * H)
            marks.append((t + 0.5, sim.earned_msat[0], sim.settled[0]))
            since = (state.last_change_at - T0) / H if state else t + 0.5
            _, earned0, count0 = next(m for m in marks if m[0] >= since - 1e-9)
            d = decide_fee(FeeInputs(chan(fee=sim.fee_ppm[0], local_ratio=0.6), None,
                                     sim.earned_msat[0] - earned0, True, None, sim.settled[0] - count0),
                           state, CFG, T0 + (t + 0.5) * H)
            if d.action == "set":
                sim.fee_ppm[0] = d.new_fee_ppm
                sets.append(t)
            state = d.new_state
        shares.append(sum(got) / len(got))
        rates.append(len([t for t in sets if t >= 7 * 24]) / 13)
    assert sum(shares) / 3 > 0.85                 # within ~85% of the best fee after a week
    assert max(rates) <= 1.5                      # broadcasts per day once converged


# --- properties ------------------------------------------------------------------------------------
observations = st.builds(
    Observation, fee_ppm=st.integers(0, 5000), base_fee_ppm=st.integers(0, 5000),
    earned_msat=st.integers(0, 10**10), forwards=st.one_of(st.none(), st.integers(0, 10**4)),
    hours=st.floats(0.1, 500), ended_at=st.floats(T0 - 10**7, T0), bias=st.sampled_from([0.95, 1.0, 1.05]))

states = st.builds(
    FeeState, fee_ppm=st.integers(0, 5000), base_fee_ppm=st.integers(0, 5000),
    last_change_at=st.floats(T0 - 30 * 86400, T0),
    last_broadcast_at=st.one_of(st.none(), st.floats(T0 - 30 * 86400, T0)),
    mode=st.sampled_from([CLIMB, PROBE, SETTLED]), direction=st.sampled_from([1, -1]),
    step_percent=st.floats(1, 100), reference=st.one_of(st.none(), observations),
    regime=st.sampled_from([fee_stages.NORMAL, fee_stages.SCARCE, fee_stages.CONGESTED]),
    bias=st.sampled_from([0.95, 1.0, 1.05]),
    settled_at=st.one_of(st.none(), st.floats(T0 - 30 * 86400, T0)),
    confirmations=st.integers(0, 10), bracketed=st.booleans(),
    checkpoint=st.one_of(st.none(), observations))


@st.composite
def configs(draw):
    lo = draw(st.integers(0, 2000))
    return default_config(
        min_fee_ppm=lo, max_fee_ppm=draw(st.integers(max(lo, 1), 5000)),
        fee_min_observation_hours=draw(st.floats(0.1, 48)),
        fee_step_percent=draw(st.floats(1, 100)), fee_step_min_ppm=draw(st.integers(1, 500)),
        scarcity_threshold=draw(st.floats(0, 1)),
        htlc_congestion_threshold=draw(st.floats(0.05, 1)),
        fee_change_min_percent=draw(st.floats(0, 100)),
        fee_broadcast_min_interval_seconds=draw(st.integers(0, 7 * 86400)))


@st.composite
def fee_inputs(draw, fee_ppm):
    capacity = draw(st.integers(1, 10**10))
    max_htlcs = draw(st.integers(0, 483))
    ch = chan(fee=fee_ppm, capacity_msat=capacity, local_msat=draw(st.integers(0, capacity)),
              opener=draw(st.sampled_from(["local", "remote"])), max_htlcs=max_htlcs,
              htlcs_in_use=draw(st.integers(0, max_htlcs)))
    fl = draw(st.one_of(st.none(), st.sampled_from([flow(s) for s in (SOURCE, SINK, BALANCED, IDLE)])))
    return FeeInputs(ch, fl, draw(st.integers(0, 10**10)), draw(st.booleans()),
                     draw(st.one_of(st.none(), st.integers(0, 10**4))),
                     draw(st.one_of(st.none(), st.integers(0, 10**4))))


def check_decision(d, old_state, config, now):
    lo, hi = config.min_fee_ppm, config.max_fee_ppm
    if d.target_fee_ppm is not None:
        assert lo <= d.target_fee_ppm <= hi
    if d.action != "set":
        assert d.new_fee_ppm == d.old_fee_ppm
        return
    assert lo <= d.new_fee_ppm <= hi                          # bounds
    assert d.new_fee_ppm != d.old_fee_ppm                     # never the same fee
    outside = not lo <= d.old_fee_ppm <= hi
    if not outside and d.old_fee_ppm:
        assert abs(d.new_fee_ppm - d.old_fee_ppm) / d.old_fee_ppm * 100 >= config.fee_change_min_percent
    last = old_state.last_broadcast_at if old_state else None
    if last is not None:
        assert now - last >= config.fee_broadcast_min_interval_seconds
    if old_state is not None and old_state.fee_ppm == d.old_fee_ppm and not outside:
        assert now - old_state.last_change_at >= config.fee_min_observation_hours * H
    assert d.new_state.fee_ppm == d.new_fee_ppm and d.new_state.last_broadcast_at == now


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), config=configs(), state=st.one_of(st.none(), states),
       hours=st.floats(0, 1000))
def test_any_decision_respects_bounds_hysteresis_and_observation(data, config, state, hours):
    fee = state.fee_ppm if state is not None and data.draw(st.booleans()) else data.draw(st.integers(0, 5000))
    i = data.draw(fee_inputs(fee))
    now = (state.last_change_at if state else T0) + hours * H
    d = decide_fee(i, state, config, now)
    check_decision(d, state, config, now)
    assert FeeState.from_dict(json.loads(json.dumps(d.new_state.to_dict()))) == d.new_state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), seed=st.integers(0, 10**6), start=st.integers(0, 5000))
def test_a_long_run_never_breaks_the_hysteresis_or_the_observation_time(config, seed, start):
    rng = random.Random(seed)
    state, fee, now, sets = None, start, T0, []
    demand = rng.uniform(0, 20)
    for _ in range(200):
        now += rng.choice([600, 1800, 3600, 4 * 3600])
        since = state.last_change_at if state else now
        forwards = int(demand * (now - since) / H * rng.uniform(0, 2))
        ch = chan(fee=fee, local_ratio=rng.random(), htlcs_in_use=rng.choice([0, 0, 0, 450]))
        d = decide_fee(FeeInputs(ch, None, forwards * max(fee, 1) * 1000, True, None, forwards),
                       state, config, now)
        check_decision(d, state, config, now)
        if d.action == "set":
            if sets:
                assert now - sets[-1] >= config.fee_broadcast_min_interval_seconds
            sets.append(now)
            fee = d.new_fee_ppm
        state = d.new_state


@given(ratios=st.lists(st.floats(0, 1), min_size=2, max_size=10), threshold=st.floats(0, 1))
def test_scarcity_factor_stays_within_one_and_three_and_never_rises_with_balance(ratios, threshold):
    factors = [scarcity_factor(r, threshold) for r in sorted(ratios)]
    assert all(1.0 <= f <= 3.0 for f in factors)
    assert all(a >= b for a, b in zip(factors, factors[1:]))


@given(st.lists(st.text(min_size=1, max_size=8), max_size=20), st.lists(st.text(min_size=1, max_size=8), max_size=20))
def test_prune_keeps_exactly_the_active_channels(scids, active):
    states = {s: i for i, s in enumerate(scids)}
    kept, removed = prune_state(states, active)
    assert set(kept) == set(states) & set(active) and removed == len(states) - len(kept)
