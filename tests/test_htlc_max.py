"""The max-HTLC bands (modules/htlc_max.py) and the htlc_max stage of the fee decision."""
import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from modules.config import default_config
from modules.fee_controller import (A_HOLD, A_SET, A_SET_HTLC_MAX, A_SKIP_POLICY, FeeDecision, FeeState,
                                    StageResult, with_htlc_max)
from modules.htlc_max import BANDS, band_floor_msat, plan_for_channel, plan_htlc_max
from modules.models import Channel

P = 990_000_000                 # a 1 M sat channel less its 1 % reserve: lightningd's ceiling
CFG = dataclasses.replace(default_config(), manage_htlc_max=True)   # off by default
NOW = 1_700_000_000.0


def test_bands_halve_from_the_channels_ceiling_down_to_a_64th():
    assert [band_floor_msat(a, P) for a in (P, P - 1, P // 2, P // 3, P // 10)] == [P, P // 2, P // 2, P // 4, P // 16]
    assert band_floor_msat(0, P) == band_floor_msat(P // 100, P) == P >> (BANDS - 1) == P // 64


def test_a_drained_channel_is_lowered_to_the_band_it_can_forward_and_that_is_worth_a_broadcast():
    plan = plan_htlc_max(spendable_msat=P // 10, possible_max_msat=P, htlc_min_msat=0, current_msat=P)
    assert plan.target_msat == P // 16 and plan.target_msat <= P // 10 and plan.urgent
    assert "lowered" in plan.reason and "99,000 sat spendable" in plan.reason


def test_a_little_over_waits_for_a_fee_broadcast_and_a_refill_raises_it_with_headroom():
    # half the channel advertised, 40 % spendable: lowered, but not alone worth a broadcast
    plan = plan_htlc_max(int(P * 0.4), P, 0, P // 2)
    assert plan.target_msat == P // 4 and not plan.urgent
    # refilled from empty to 90 %: the band at or below 3/4 of it, two bands or more up: urgent
    plan = plan_htlc_max(int(P * 0.9), P, 0, P // 64)
    assert plan.target_msat == P // 2 and plan.urgent
    # one band up only: it rides with the next fee broadcast
    plan = plan_htlc_max(int(P * 0.7), P, 0, P // 4)
    assert plan.target_msat == P // 2 and not plan.urgent


def test_balance_noise_around_a_band_edge_moves_nothing():
    rng = random.Random(7)
    for edge in (P // 2, P // 8, P // 32):
        current = plan_htlc_max(edge, P, 0, P).target_msat   # lowered once to where it fits
        changes = 0
        for _ in range(500):                                  # +-20 % around the edge it sits on
            plan = plan_htlc_max(int(edge * rng.uniform(1.0, 1.2)), P, 0, current)
            changes += plan.changes
            current = plan.target_msat
        assert changes == 0, edge
        # and once up, noise of +-12 % around where it went up brings it back down never
        up = plan_htlc_max(int(edge * 8 / 3) + 1, P, 0, current)
        assert up.changes and up.target_msat == 2 * edge
        assert not any(plan_htlc_max(int(edge * 8 / 3 * rng.uniform(0.88, 1.12)), P, 0, up.target_msat).changes
                       for _ in range(500))


@settings(max_examples=300, deadline=None)
@given(spendable=st.integers(0, 2 * P), top=st.integers(1, P), htlc_min=st.integers(0, P // 8),
       current=st.integers(0, 2 * P))
def test_never_below_the_minimum_nor_zero_never_above_the_ceiling_never_over_what_it_forwards(
        spendable, top, htlc_min, current):
    plan = plan_htlc_max(spendable, top, htlc_min, current)
    if plan.changes:
        assert min(max(htlc_min, 1), top) <= plan.target_msat <= top   # a minimum above the ceiling: the ceiling
        # more than it can forward only at a floor: the smallest band, or the minimum
        floors = {min(top, max(htlc_min, 1, top >> (BANDS - 1))), min(top, max(htlc_min, 1))}
        assert plan.target_msat <= spendable or plan.target_msat in floors
        if plan.target_msat > current and current >= max(htlc_min, 1):
            assert plan.target_msat <= spendable     # never raised above what it can forward
    else:
        assert plan.target_msat == current


def test_the_minimum_wins_over_a_band_below_it():
    plan = plan_htlc_max(0, P, 50_000_000, P)
    assert plan.target_msat == 50_000_000


def chan(local_msat, htlc_max=P, **kw):
    return Channel("800000x1x0", "02" + "a" * 64, kw.pop("state", "CHANNELD_NORMAL"), 1_000_000_000, local_msat,
                   local_msat, 1_000_000_000 - local_msat, 0, 100, "local", 0, 483, True,
                   htlc_minimum_msat=0, htlc_maximum_msat=htlc_max, htlc_max_possible_msat=P)


def decision(action, channel, state=None, new_fee=None):
    state = state or FeeState(100, last_broadcast_at=None, gossip_tokens=1.0, gossip_tokens_at=NOW)
    fee = new_fee if new_fee is not None else channel.fee_ppm
    return FeeDecision(channel.short_channel_id, channel.fee_ppm, fee, action, ["why"],
                       [StageResult("gossip", fee, "why")], state)


def test_the_stage_rides_with_a_fee_set_or_goes_alone_within_the_gossip_budget():
    drained = chan(P // 20)
    with_fee = with_htlc_max(decision(A_SET, drained, new_fee=300), drained, CFG, NOW)
    assert with_fee.action == A_SET and with_fee.new_htlc_max_msat == P // 32
    assert with_fee.stages[-1].stage == "htlc_max" and "sent with the fee" in with_fee.stages[-1].reason
    alone = with_htlc_max(decision(A_HOLD, drained), drained, CFG, NOW)
    assert alone.action == A_SET_HTLC_MAX and alone.new_htlc_max_msat == P // 32 and alone.new_fee_ppm == 100
    assert alone.new_state.last_broadcast_at == NOW and alone.new_state.gossip_tokens == 0.0   # a token spent
    # no token left (or too soon after the last broadcast): it waits, nothing is sent
    spent = FeeState(100, last_broadcast_at=NOW - 7 * 3600, gossip_tokens=0.2, gossip_tokens_at=NOW - 3600)
    waits = with_htlc_max(decision(A_HOLD, drained, spent), drained, CFG, NOW)
    assert waits.action == A_HOLD and waits.new_htlc_max_msat is None and waits.htlc_max_target_msat == P // 32
    assert "gossip budget" in waits.stages[-1].reason
    soon = FeeState(100, last_broadcast_at=NOW - 3600, gossip_tokens=2.0, gossip_tokens_at=NOW)
    assert with_htlc_max(decision(A_HOLD, drained, soon), drained, CFG, NOW).action == A_HOLD


def test_a_small_change_waits_for_the_next_fee_broadcast_and_noise_changes_nothing():
    fits = chan(int(P * 0.45), htlc_max=P // 2)          # 45 % spendable, half advertised: a little over
    d = with_htlc_max(decision(A_HOLD, fits), fits, CFG, NOW)
    assert d.action == A_HOLD and d.new_htlc_max_msat is None and "waits for the next fee" in d.reasons[-1]
    steady = chan(int(P * 0.6), htlc_max=P // 2)
    d = with_htlc_max(decision(A_SET, steady, new_fee=300), steady, CFG, NOW)
    assert d.new_htlc_max_msat is None and "within its band" in d.stages[-1].reason


def test_off_passive_and_unknown_leave_it_alone():
    drained = chan(P // 20)
    off = with_htlc_max(decision(A_HOLD, drained), drained, dataclasses.replace(CFG, manage_htlc_max=False), NOW)
    assert off.action == A_HOLD and off.new_htlc_max_msat is None and "is off" in off.stages[-1].reason
    passive = with_htlc_max(decision(A_SKIP_POLICY, drained), drained, CFG, NOW)
    assert passive.action == A_SKIP_POLICY and passive.new_htlc_max_msat is None
    unknown = dataclasses.replace(drained, htlc_maximum_msat=None)
    assert plan_for_channel(unknown) is None
    assert with_htlc_max(decision(A_HOLD, unknown), unknown, CFG, NOW).new_htlc_max_msat is None
