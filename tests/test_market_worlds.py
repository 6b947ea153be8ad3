"""The economic bench's family of worlds (simnode/market.py KINDS) and the fixed-fee +
standard-rebalancer reference (simnode/standard_rebalancer.py). Fast: no plugin runs."""
import math

import pytest

from simnode import SimNode
from simnode.market import (DAY, HOUR, PPM, SAT, ExponentialDemand, MarketSim, RouteDemand, UndercutDemand,
                            build_market, channel_records, competitor_ppm_at, history_snapshot,
                            memory_factor)
from simnode.market_run import forward_writer, populate_node
from simnode.standard_rebalancer import default_budget_sat, run_standard


def route_revenue_msat(market, x, fee_ppm):
    """What channel x's senders would pay at a fixed fee, from the arrivals alone (balances
    and failure memory left out): the revenue curve the world's arrivals carry."""
    return sum(a * fee_ppm // PPM for _t, cx, a, reservation, _v, _w in market.events
               if cx == x and fee_ppm < reservation)


def test_routes_world_has_a_two_hump_revenue_curve():
    """A captive share paying up to its own budget: on a channel with a cheap competitor,
    pricing near the captive senders' budget beats the shoulder just above the competitor."""
    market = build_market("routes", 1, days=10)
    found = []
    for x, c in enumerate(market.channels):
        curve = c.curves[0]
        shoulder = int(curve.competitor_ppm * math.exp(2 * curve.sigma))   # the competitor x its spread
        captive = int(curve.budget_ppm * 0.7)
        if shoulder * 2 >= captive:
            continue
        expected = [f * curve.per_hour(f) for f in (int(curve.competitor_ppm * 0.7), shoulder, captive)]
        if expected[0] > expected[1] < expected[2] and \
                route_revenue_msat(market, x, captive) > route_revenue_msat(market, x, shoulder):
            found.append(c.scid)
    assert found, "no channel with a captive hump above its competitor's shoulder"
    # and the world keeps each channel's competitor price for the node's gossip
    assert all(c.network_fee_ppm == round(c.curves[0].competitor_ppm) for c in market.channels)


def test_routes_competitor_drifts_daily_and_shifts_at_mid_run_on_a_third():
    market = build_market("routes", 2, days=10)
    shifted = [x for x, c in enumerate(market.channels) if c.shifts]
    assert len(shifted) == 4 and market.drifts
    x = shifted[0]
    factor = market.channels[x].curves[1].competitor_ppm / market.channels[x].curves[0].competitor_ppm
    assert 0.5 <= factor <= 0.72 or 1.39 <= factor <= 2.0
    daily = [competitor_ppm_at(market, 0, d * DAY + HOUR) for d in range(4)]
    assert len(set(daily)) == 4 and all(0.6 < b / a < 1.6 for a, b in zip(daily, daily[1:]))


def arrivals_in(sim, start, end, refused_at):
    """Arrivals on every channel in [start, end) with each channel's last refusal at refused_at."""
    sim.last_refusal_s = [refused_at] * sim.n
    before = sum(sim.arrived)
    sim.advance(end)
    return sum(sim.arrived) - before


def test_failure_memory_halves_arrivals_after_a_refusal_and_fades_in_hours():
    market = build_market("routes", 3, days=10)
    sim = MarketSim(market, channel_records(market))
    sim.fee_ppm = [1] * sim.n                # every sender would take our channel
    window = 15 * 60
    fresh = after = recovered = 0
    for k in range(1, 79):
        t0 = k * 3 * HOUR
        sim.advance(t0)
        snap = sim.snapshot()
        fresh += arrivals_in(sim, t0, t0 + window, -math.inf)
        sim.restore(snap)
        after += arrivals_in(sim, t0, t0 + window, t0)              # refused just now
        sim.restore(snap)
        recovered += arrivals_in(sim, t0, t0 + window, t0 - 6 * HOUR)  # refused 6 h ago
        sim.restore(snap)
    assert fresh > 250
    assert 0.4 < after / fresh < 0.65
    assert recovered / fresh > 0.9
    assert memory_factor(0) == pytest.approx(0.5) and memory_factor(2 * HOUR) == pytest.approx(1 - 0.5 / math.e)


def test_a_refusal_for_balance_starts_the_memory():
    market = build_market("routes", 1, days=3)
    sim = MarketSim(market, channel_records(market))
    sim.local_msat = [h for h in sim.held_local]   # nothing spendable: every forward refused
    sim.advance(market.run_s)
    refused = [x for x in range(sim.n) if sim.failed[x]]
    assert refused and all(sim.last_refusal_s[x] > 0 for x in refused)


@pytest.mark.parametrize("kind", ["high-new", "routes"])
def test_no_history_worlds_give_the_plugin_nothing_to_hydrate(tmp_path, kind):
    market = build_market(kind, 1, days=2)
    assert market.history_s == 0 and all(t >= 0 for t, *_ in market.events)
    with SimNode(tmp_path) as node:
        records = populate_node(node, market)
        sim = MarketSim(market, records, forward_writer(node, market, 1_700_000_000))
        sim.advance(0.0)                         # what market_run plays before the plugin starts
        assert node.forwards.listforwards() == []
        sim.advance(DAY)
        assert node.forwards.listforwards()           # the run itself has forwards
    if kind == "high-new":
        assert all(isinstance(c.curves[0], ExponentialDemand) for c in market.channels)
        assert all(isinstance(c.curves[1], (ExponentialDemand, UndercutDemand)) for c in market.channels)


def test_routes_old_has_history_and_three_channels_whose_demand_begins_at_mid_run():
    market = build_market("routes-old", 1, days=4)
    assert market.history_s == 14 * DAY and len(market.channels) == 15
    late = [x for x, c in enumerate(market.channels) if c.opens_s is not None]
    assert late == [12, 13, 14] and {market.channels[x].opens_s for x in late} == {market.shift_s}
    assert min(t for t, x, *_ in market.events if x in late) >= market.shift_s
    sim = history_snapshot(market)
    assert sum(sim.settled) > 0
    assert all(sim.in_msat[x] == sim.out_msat[x] == 0 for x in late)   # no forward entered through them either
    assert all(isinstance(c.curves[0], RouteDemand) for c in market.channels)


def test_standard_rebalancer_pays_at_most_half_the_fee_and_keeps_to_its_daily_budget():
    market = build_market("high", 1, days=10)
    fee_ppm = 233
    tight = run_standard(market, fee_ppm, budget_sat=400)
    roomy = run_standard(market, fee_ppm, budget_sat=default_budget_sat())
    assert default_budget_sat() == 5000
    for run, budget_sat in ((tight, 400), (roomy, 5000)):
        assert run.payments and run.rebalance_fee_msat > 0
        assert all(amount * (fee_ppm // 2) // PPM >= fee and maxppm == fee_ppm // 2
                   for _t, fee, amount, maxppm in run.payments)
        assert run.most_paid_in_24h_msat() <= budget_sat * SAT
        assert run.net_msat == run.earned_msat - run.rebalance_fee_msat
    assert tight.rebalance_fee_msat < roomy.rebalance_fee_msat      # the tight budget held it back
    again = run_standard(market, fee_ppm, budget_sat=400)
    assert (again.payments, again.earned_msat) == (tight.payments, tight.earned_msat)
