"""Rebalance decision core: targets, the futility breaker, expected value, the plan."""
import itertools
import math
from fractions import Fraction

from hypothesis import given, settings, strategies as st

from modules.config import default_config
from modules.demand import DemandCurve
from modules.models import BALANCED, IDLE, SINK, SOURCE, Channel, ChannelFlow
from modules.rebalance_decisions import (
    DESTINATION, FUTILITY_REASON, MAX_SOURCE_CANDIDATES, SOURCE_ROLE, DemandOutlook, SourceCandidate,
    expected_value, futility_blocked, liquidity_target_msat, plan_rebalances, prune_failures,
    worst_lost_earnings_msat)

SAT = 1000
HOUR = 3600
NOW = 1_700_000_000
CONFIG = default_config()   # floor 500k, ratio 0.5, 3 days, horizon 7 days, min profit 10 sat


def channel(scid, capacity_sats, local_sats, fee_ppm, peer=None, state="CHANNELD_NORMAL",
            connected=True, spendable_sats=None):
    cap, local = capacity_sats * SAT, local_sats * SAT
    spendable = local if spendable_sats is None else spendable_sats * SAT
    return Channel(scid, peer or "02" + scid, state, cap, local, spendable, cap - local, 0, fee_ppm,
                   "local", 0, 30, connected)


def flow(scid, state, daily_volume_sats, daily_out_sats):
    return ChannelFlow(scid, 0, 0, 0, 0, 0, 0.0, daily_volume_sats * SAT, daily_out_sats * SAT,
                       state, NOW)


def by_scid(decisions):
    return {d.short_channel_id: d for d in decisions}


# A destination that sells 500k sat/day at 1000 ppm, and a sink full of cheap liquidity.
DEST = channel("1x1x0", 10_000_000, 200_000, 1000)
DEST_FLOW = flow("1x1x0", SOURCE, 600_000, 500_000)
SRC = channel("2x1x0", 10_000_000, 8_000_000, 100)
SRC_FLOW = flow("2x1x0", SINK, 100_000, 10_000)


def plan(channels, flows, failures=None, config=CONFIG, **kw):
    fees = {c.short_channel_id: c.fee_ppm for c in channels}
    return plan_rebalances(channels, {f.short_channel_id: f for f in flows}, fees, failures or {},
                           config, NOW, **kw)


# --- feature 16 ---------------------------------------------------------------------
def test_spec_example_lazy_capital_is_released():
    # A 10 M sat channel moving 10 k sat a day keeps ~500 k sat, not 5 M.
    assert liquidity_target_msat(10_000_000 * SAT, 10_000 * SAT, CONFIG) == 500_000 * SAT


def test_target_follows_volume_between_floor_and_capacity_share():
    assert liquidity_target_msat(10_000_000 * SAT, 600_000 * SAT, CONFIG) == 1_800_000 * SAT
    assert liquidity_target_msat(10_000_000 * SAT, 5_000_000 * SAT, CONFIG) == 5_000_000 * SAT
    assert liquidity_target_msat(2_000_000 * SAT, 0, CONFIG) == 500_000 * SAT
    small_floor = default_config(rebalance_floor_sats=0, rebalance_target_ratio=0.3, rebalance_target_days=2.5)
    assert liquidity_target_msat(1_000_001, 3, small_floor) == 7   # floor(7.5): integer msat


@given(capacity=st.integers(0, 10**13), volume=st.integers(0, 10**13),
       floor_sats=st.integers(0, 10**10), ratio=st.floats(0.05, 0.95), days=st.floats(0.1, 90))
def test_target_stays_within_floor_and_capacity_share(capacity, volume, floor_sats, ratio, days):
    config = default_config(rebalance_floor_sats=floor_sats, rebalance_target_ratio=ratio,
                            rebalance_target_days=days)
    target = liquidity_target_msat(capacity, volume, config)
    assert isinstance(target, int)
    assert floor_sats * SAT <= target <= max(floor_sats * SAT, capacity * ratio)


# --- feature 17 ---------------------------------------------------------------------
def test_breaker_needs_more_than_max_failures_within_the_cooldown():
    assert futility_blocked(11, NOW - 47 * HOUR, CONFIG, NOW)
    assert not futility_blocked(10, NOW - 1 * HOUR, CONFIG, NOW)       # count must exceed 10
    assert not futility_blocked(11, NOW - 48 * HOUR, CONFIG, NOW)      # cooled down
    assert not futility_blocked(50, None, CONFIG, NOW)
    assert not futility_blocked(0, None, CONFIG, NOW)


def test_breaker_skips_a_destination_at_11_failures_and_readmits_it_after_48h():
    blocked = by_scid(plan([DEST, SRC], [DEST_FLOW, SRC_FLOW], {"1x1x0": (11, NOW - 47 * HOUR)}))["1x1x0"]
    assert not blocked.start and blocked.futility_blocked
    assert FUTILITY_REASON in blocked.reasons
    again = by_scid(plan([DEST, SRC], [DEST_FLOW, SRC_FLOW], {"1x1x0": (11, NOW - 49 * HOUR)}))["1x1x0"]
    assert again.start and not again.futility_blocked and FUTILITY_REASON not in again.reasons


# --- expected value and the plan ------------------------------------------------------
def test_profitable_destination_starts_with_the_expected_max_ppm():
    decisions = plan([DEST, SRC], [DEST_FLOW, SRC_FLOW])
    d = decisions[0]
    assert d.short_channel_id == "1x1x0" and d.role == DESTINATION and d.start
    # target 1.8 M (3 days of 600 k), local 200 k: 1.6 M to move, in whole 100 k chunks.
    assert d.target_msat == 1_800_000 * SAT and d.amount_msat == 1_600_000 * SAT
    # sells all 1.6 M within 7 days at 1000 ppm: 1600 sat. The sink would have sold
    # 70 k of it at 100 ppm: 7 sat. Room for fees: 1600 - 7 - 10 = 1583 sat on 1.6 M.
    assert d.expected_revenue_msat == 1_600_000
    assert d.lost_earnings_msat == 7_000
    assert d.max_ppm == 989                      # floor(1_583_000 * 1e6 / 1.6e9)
    assert d.worst_cost_msat == 1_582_400
    assert d.expected_profit_msat == 1_600_000 - 1_582_400 - 7_000
    assert d.expected_profit_msat >= CONFIG.rebalance_min_profit_sats * SAT
    assert d.candidates == ("2x1x0",) and d.source_floor_msat == 500_000 * SAT
    assert d.target_local_msat == 1_800_000 * SAT          # 18 % of the 10 M channel
    src = by_scid(decisions)["2x1x0"]
    assert src.role == SOURCE_ROLE and not src.start and "above target" in src.reasons


def test_unprofitable_destination_is_refused_with_its_reason():
    cheap = channel("3x1x0", 5_000_000, 100_000, 5)
    d = by_scid(plan([cheap, SRC], [flow("3x1x0", SOURCE, 2_000, 1_000), SRC_FLOW]))["3x1x0"]
    assert not d.start and d.amount_msat == 400_000 * SAT
    # sells 7 k sat in 7 days at 5 ppm: 35 msat; the sink loses 70 k at 100 ppm: 7 sat.
    assert d.expected_revenue_msat == 35 and d.lost_earnings_msat == 7_000 and d.max_ppm == 0
    assert "expected profit -6.965 sat < min 10 sat" in d.reasons


def test_max_ppm_never_exceeds_the_destination_fee():
    # Plenty of revenue room, but paying more than the channel charges is never worth it.
    ev = expected_value(1_000_000 * SAT, 50, 10_000_000 * SAT, [SourceCandidate("s", 0, 0, 10**12)],
                        default_config(rebalance_min_profit_sats=0))
    assert ev.worthwhile and ev.max_ppm == 50
    # nor more than the plugin's own fee ceiling, whatever fee was set by hand
    ev = expected_value(1_000_000 * SAT, 4000, 10_000_000 * SAT, [SourceCandidate("s", 0, 0, 10**12)],
                        default_config(rebalance_min_profit_sats=0, max_fee_ppm=2500))
    assert ev.worthwhile and ev.max_ppm == 2500 and ev.expected_revenue_msat == 4_000_000


def test_sinks_and_idle_channels_are_not_destinations():
    for state in (SINK, IDLE):
        d = by_scid(plan([DEST, SRC], [flow("1x1x0", state, 600_000, 500_000), SRC_FLOW]))["1x1x0"]
        assert d.role == DESTINATION and not d.start
        assert any("does not sell" in r for r in d.reasons)


def test_force_skips_the_expected_value_rule_but_not_the_breaker():
    cheap = channel("3x1x0", 5_000_000, 100_000, 5)
    flows = [flow("3x1x0", SOURCE, 2_000, 1_000), SRC_FLOW]
    forced = by_scid(plan([cheap, SRC], flows, force=True))["3x1x0"]
    assert forced.start and forced.forced and forced.max_ppm == 5   # the destination's own fee
    assert forced.worst_cost_msat == 2_000
    blocked = by_scid(plan([cheap, SRC], flows, {"3x1x0": (11, NOW - HOUR)}, force=True))["3x1x0"]
    assert not blocked.start and FUTILITY_REASON in blocked.reasons


def test_a_source_is_never_drained_below_its_own_target():
    # The source holds only 300 k above its 500 k target: that is all the job may take.
    low = channel("2x1x0", 10_000_000, 800_000, 100)
    d = by_scid(plan([DEST, low], [DEST_FLOW, SRC_FLOW]))["1x1x0"]
    assert d.start and d.amount_msat == 300_000 * SAT and d.source_floor_msat == 500_000 * SAT
    # A channel below its own target is never a source, even a cheap sink.
    below = channel("2x1x0", 10_000_000, 400_000, 100)
    d = by_scid(plan([DEST, below], [DEST_FLOW, SRC_FLOW]))["1x1x0"]
    assert not d.start and d.candidates == () and "no source can give liquidity" in d.reasons


def test_sources_are_shared_not_promised_twice():
    other = channel("4x1x0", 10_000_000, 100_000, 800)
    low = channel("2x1x0", 10_000_000, 3_000_000, 100)      # 2.5 M above its target
    decisions = plan([DEST, other, low], [DEST_FLOW, flow("4x1x0", SOURCE, 600_000, 500_000), SRC_FLOW])
    started = [d for d in decisions if d.start]
    assert [d.short_channel_id for d in started] == ["1x1x0", "4x1x0"]   # by expected profit
    # the first takes the 1.6 M it wants, the second what is left
    assert [d.amount_msat for d in started] == [1_600_000 * SAT, 900_000 * SAT]
    assert started[0].expected_profit_msat >= started[1].expected_profit_msat


def test_a_source_priced_above_the_destination_is_not_used_unless_it_fills_up():
    dear = channel("2x1x0", 10_000_000, 8_000_000, 2000)
    d = by_scid(plan([DEST, dear], [DEST_FLOW, flow("2x1x0", SOURCE, 100_000, 80_000)]))["1x1x0"]
    assert d.candidates == () and not d.start
    d = by_scid(plan([DEST, dear], [DEST_FLOW, flow("2x1x0", SINK, 100_000, 10_000)]))["1x1x0"]
    assert d.candidates == ("2x1x0",)


def test_channels_to_the_same_peer_are_not_each_others_source():
    twin = channel("2x1x0", 10_000_000, 8_000_000, 100, peer=DEST.peer_id)
    assert by_scid(plan([DEST, twin], [DEST_FLOW, SRC_FLOW]))["1x1x0"].candidates == ()


def test_budget_cuts_the_job_to_fitting_chunks_or_refuses_it():
    # the reservation, (1.6 M + one chunk) at 989 ppm, is 1681.3 sat; 600 sat fits 500 k + a chunk.
    full = by_scid(plan([DEST, SRC], [DEST_FLOW, SRC_FLOW]))["1x1x0"]
    assert full.reserve_msat == math.ceil(1_700_000 * SAT * 989 / 10**6)
    d = by_scid(plan([DEST, SRC], [DEST_FLOW, SRC_FLOW], budget_available_msat=600 * SAT))["1x1x0"]
    assert d.start and d.reserve_msat <= 600 * SAT and d.amount_msat == 500_000 * SAT
    assert any("to fit the budget" in r for r in d.reasons)
    d = by_scid(plan([DEST, SRC], [DEST_FLOW, SRC_FLOW], budget_available_msat=50 * SAT))["1x1x0"]
    assert not d.start and any(r.startswith("budget:") for r in d.reasons)


def test_exclusions_inactive_channels_and_one_channel_passes():
    assert by_scid(plan([DEST, SRC], [DEST_FLOW, SRC_FLOW], sources_exclude={"2x1x0"}))["1x1x0"].candidates == ()
    d = by_scid(plan([DEST, SRC], [DEST_FLOW, SRC_FLOW], destinations_exclude={"1x1x0"}))["1x1x0"]
    assert not d.start and d.role != DESTINATION
    closing = channel("1x1x0", 10_000_000, 200_000, 1000, state="CHANNELD_SHUTTING_DOWN")
    assert "not active (CHANNELD_SHUTTING_DOWN)" in by_scid(plan([closing, SRC], [DEST_FLOW, SRC_FLOW]))["1x1x0"].reasons
    only = plan([DEST, SRC], [DEST_FLOW, SRC_FLOW], only_scids=["1x1x0"], amount_msat=300_000 * SAT)
    assert len(only) == 1 and only[0].start and only[0].amount_msat == 300_000 * SAT
    assert only[0].to_dict()["candidates"] == ["2x1x0"]


def test_prune_failures_drops_closed_channels_only():
    counts = {"1x1x0": 3, "2x1x0": 12, "9x9x9": 1}
    kept, removed = prune_failures(counts, ["1x1x0", "2x1x0", "5x5x5"])
    assert kept == {"1x1x0": 3, "2x1x0": 12} and removed == ["9x9x9"]
    assert counts == {"1x1x0": 3, "2x1x0": 12, "9x9x9": 1}     # input untouched


# --- properties -----------------------------------------------------------------------
# amounts in msat, mostly at the scale of real channels (hypothesis favours small integers)
amount_st = st.integers(0, 100).map(lambda k: k * 100_000 * SAT) | st.integers(0, 10**10)
sources_st = st.lists(st.builds(SourceCandidate, st.text("abc", min_size=1, max_size=3),
                                st.integers(0, 5000) | st.integers(0, 300),
                                st.just(0) | st.integers(0, 1_000_000).map(lambda sats: sats * SAT),
                                amount_st),
                      max_size=5, unique_by=lambda s: s.short_channel_id)


@settings(max_examples=300)
@given(deficit=amount_st, dest_fee=st.integers(0, 5000) | st.integers(500, 2500),
       dest_out=st.integers(0, 2_000_000).map(lambda sats: sats * SAT), sources=sources_st, min_profit=st.integers(0, 1000), horizon=st.floats(0.5, 90),
       chunk_sats=st.sampled_from([1000, 10_000, 100_000]), force=st.booleans())
def test_max_ppm_never_makes_the_worst_case_unprofitable(deficit, dest_fee, dest_out, sources, min_profit,
                                                        horizon, chunk_sats, force):
    config = default_config(rebalance_min_profit_sats=min_profit, rebalance_horizon_days=horizon,
                            rebalance_chunk_sats=chunk_sats)
    ev = expected_value(deficit, dest_fee, dest_out, sources, config, force=force)
    assert ev.amount_msat % (chunk_sats * SAT) == 0
    assert ev.amount_msat <= min(deficit, sum(s.giveable_msat for s in sources))
    assert 0 <= ev.max_ppm <= min(dest_fee, config.max_fee_ppm)
    assert ev.worst_cost_msat * 10**6 >= ev.amount_msat * ev.max_ppm
    assert ev.reserve_msat * 10**6 >= (ev.amount_msat + chunk_sats * SAT) * ev.max_ppm
    if ev.worthwhile:
        assert ev.worst_cost_msat + ev.lost_earnings_msat + min_profit * SAT <= ev.expected_revenue_msat
        assert ev.expected_profit_msat >= min_profit * SAT
    # whichever way sling splits the amount among the candidates, the loss is covered:
    # the worst split fills the sellable parts of some order of sources; try every order.
    worst = 0
    for order in itertools.permutations(sources):
        remaining, loss_ppm_msat = ev.amount_msat, 0
        for s in order:
            x = min(remaining, s.giveable_msat, math.floor(s.daily_out_msat * Fraction(horizon)))
            loss_ppm_msat += x * s.fee_ppm
            remaining -= x
        worst = max(worst, loss_ppm_msat)
    assert ev.lost_earnings_msat == -(-worst // 10**6)


@given(sources=sources_st, amount=st.integers(0, 10**11))
def test_worst_lost_earnings_grows_with_the_amount(sources, amount):
    assert worst_lost_earnings_msat(amount, sources, 7.0) <= worst_lost_earnings_msat(amount + 10**6, sources, 7.0)


def channel_strategy(local_share, fee, states, volume, out_share):
    return st.builds(
        lambda i, cap, local_pct, fee_ppm, state, vol, out_pct: (
            channel(f"{i}x1x0", cap, cap * local_pct // 100, fee_ppm),
            flow(f"{i}x1x0", state, vol, vol * out_pct // 100)),
        st.integers(1, 10**6), st.integers(100_000, 20_000_000), local_share, fee,
        st.sampled_from(states), volume, out_share)


ALL_STATES = [SOURCE, SINK, BALANCED, IDLE]
channel_st = st.one_of(
    channel_strategy(st.integers(0, 100), st.integers(0, 3000), ALL_STATES, st.integers(0, 3_000_000),
                     st.integers(0, 100)),
    # likely destinations: drained, selling, dear
    channel_strategy(st.integers(0, 30), st.integers(100, 2500), [SOURCE, BALANCED],
                     st.integers(100_000, 3_000_000), st.integers(30, 100)),
    # likely sources: full, filling or idle, cheap
    channel_strategy(st.integers(50, 100), st.integers(0, 500), [SINK, BALANCED, IDLE],
                     st.integers(0, 1_000_000), st.integers(0, 50)))


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(channel_st, min_size=1, max_size=12, unique_by=lambda p: p[0].short_channel_id),
       budget_sats=st.none() | st.integers(0, 20_000), force=st.booleans())
def test_plan_keeps_sources_above_target_and_jobs_within_budget(pairs, budget_sats, force):
    channels, flows = [p[0] for p in pairs], [p[1] for p in pairs]
    decisions = plan(channels, flows, budget_available_msat=None if budget_sats is None else budget_sats * SAT,
                     force=force)
    views = by_scid(decisions)
    assert len(decisions) == len(channels)
    started = [d for d in decisions if d.start]
    if budget_sats is not None:
        assert sum(d.reserve_msat for d in started) <= budget_sats * SAT
    for d in started:
        assert d.role == DESTINATION and d.max_ppm >= 1 and d.max_ppm <= d.fee_ppm
        assert 0 < len(d.candidates) <= MAX_SOURCE_CANDIDATES and d.short_channel_id not in d.candidates
        assert force or d.worst_cost_msat + d.lost_earnings_msat + d.min_profit_msat <= d.expected_revenue_msat
        room = 0
        for scid in d.candidates:
            src = views[scid]
            assert src.local_msat > src.target_msat and d.source_floor_msat >= src.target_msat
            room += src.local_msat - d.source_floor_msat
        assert d.amount_msat <= room
    # Sling, at its worst, drawing every job in full from its candidates down to the job's
    # floor, in whatever order: no source ends below its own target.
    local = {scid: v.local_msat for scid, v in views.items()}
    for d in started:
        remaining = d.amount_msat
        for scid in d.candidates:
            take = max(0, min(remaining, local[scid] - d.source_floor_msat))
            local[scid] -= take
            remaining -= take
    assert all(local[s] >= views[s].target_msat for d in started for s in d.candidates)
    profits = [d.expected_profit_msat for d in started]
    assert profits == sorted(profits, reverse=True)


def test_a_refill_valued_away_from_the_fee_in_force_says_how_far():
    # The curve promises demand at any fee up to the maximum (price scale 20 000 ppm): the
    # refill is valued far above the 400 ppm the channel sells at, and its verdict says so,
    # so an operator reading revenue-rebalance sees how far the valuation reaches.
    curve = DemandCurve(reference_fee_ppm=400, scales_ppm=(20_000.0,), weights=(1.0,),
                        log_rates_at_reference=(math.log(2.0),), mean_amount_msat=500_000 * SAT,
                        arrivals=100)
    outlook = DemandOutlook(curve, inflow_msat_per_hour=0.0, has_demand=True)
    source = SourceCandidate("2x1x0", 100, 0, 8_000_000 * SAT)
    ev = expected_value(1_000_000 * SAT, 400, 0, [source], CONFIG, outlook=outlook,
                        dest_local_msat=100_000 * SAT)
    _, sells_at_ppm, _ = outlook.refill_value(100_000 * SAT, 1_000_000 * SAT, CONFIG)
    assert sells_at_ppm > 800
    text = " ".join(ev.reasons)
    assert (f"at {sells_at_ppm} ppm (its demand curve's price; {sells_at_ppm / 400:.1f}x its fee in "
            f"force, 400 ppm)") in text
    # valued by its fee alone (no curve yet), there is nothing to compare
    plain = expected_value(1_000_000 * SAT, 400, 500_000 * SAT, [source], CONFIG)
    assert "fee in force" not in " ".join(plain.reasons)
