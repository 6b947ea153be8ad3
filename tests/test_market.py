"""The market model the economic bench stands on (simnode/market*.py): what operators rely on
when they read its figures. Fast: small markets, short runs."""
import pytest

from simnode import SimNode
from simnode.market import (DAY, LOCAL_FAILED, SETTLED, MarketSim, build_market, channel_records,
                            fee_grid, history_snapshot)
from simnode.market_baselines import baselines, static_run
from simnode.market_run import forward_writer, populate_node, run_plugin
from simnode.sling import RefillCosts


def small(kind="high", seed=1, days=2, history_days=2, channels=6):
    return build_market(kind, seed, days=days, history_days=history_days, channels=channels)


def test_same_seed_same_market_and_same_result():
    a, b = small(seed=3), small(seed=3)
    assert a.channels == b.channels and a.events == b.events
    assert small(seed=4).events != a.events
    runs = []
    for _ in range(2):
        sim = static_run(a, [(150, 300)] * len(a.channels))
        runs.append((sim.totals(), sim.local_msat))
    assert runs[0] == runs[1]


def test_a_fee_changes_which_arrivals_are_accepted_never_the_arrivals():
    """Thinning: without balances in the way (dense), a channel forwards exactly the
    candidates whose acceptance uniform is below demand(fee) / bound."""
    market = build_market("dense", 2, days=2, history_days=0, channels=5)
    for fee in (20, 300, 2000):
        sim = MarketSim(market, channel_records(market))
        sim.fee_ppm = [fee] * 5
        sim.advance(market.run_s)
        for x in range(5):
            expect = sum(1 for t, cx, _a, u, _v in market.events
                         if cx == x and u < sim.accept_probability(x, fee, market.regime(t)))
            assert sim.settled[x] == sim.arrived[x] == expect


def test_forwards_need_balance_and_refusals_are_local_failed_4103(tmp_path):
    market = small("high", 2)
    with SimNode(tmp_path) as node:
        records = populate_node(node, market)
        seen = []
        sim = MarketSim(market, records, forward_writer(node, market, 1_700_000_000,
                                                        lambda when, event: seen.append(event)))
        spendable = {c["short_channel_id"]: c["spendable_msat"]
                     for c in node.state.listpeerchannels()["channels"]}
        for x, c in enumerate(market.channels):   # the market's rule is the node's spendable
            assert c.local_msat - sim.held_local[x] == spendable[c.scid]
        sim.advance(market.run_s)
        failed = node.forwards.listforwards(status="local_failed")
        settled = node.forwards.listforwards(status="settled")
    assert len(failed) == sum(sim.failed) > 0 and len(settled) == sum(sim.settled)
    assert {f["failcode"] for f in failed} == {4103}
    assert {f["failreason"] for f in failed} == {"WIRE_TEMPORARY_CHANNEL_FAILURE"}
    assert all("out_msat" not in f and f["in_channel"] != f["out_channel"] for f in failed)
    assert [e["status"] for e in seen].count(LOCAL_FAILED) == len(failed)
    assert [e["status"] for e in seen].count(SETTLED) == len(settled)
    assert [e["status"] for e in seen].count("offered") == len(settled)
    # balances never go below what the node could send, nor above what it could receive
    for x, c in enumerate(market.channels):
        assert sim.held_local[x] <= sim.local_msat[x] <= c.capacity_msat - sim.held_remote[x]


def test_balance_is_conserved_fees_in_rebalance_fees_out_and_runs_repeat():
    """Through the real plugin with sling: every msat on our side is the start balance plus
    fees earned minus rebalance fees paid. And a run repeats exactly, so two plugin
    configurations compared on a seed differ only by what they decided."""
    market = build_market("high", 4, days=2, history_days=1, channels=6)
    run = run_plugin(market, sling=True)
    assert run.rebalance_fee_msat > 0 and run.moved_msat > 0      # this seed rebalances on day 2
    start = sum(c.local_msat for c in market.channels)
    earned = run.history_earned_msat + sum(run.earned_msat)
    assert sum(run.final_local_msat) == start + earned - run.rebalance_fee_msat
    assert run.loop_errors == {}
    again = run_plugin(market, sling=True)
    assert (again.totals, again.payments, again.broadcasts) == (run.totals, run.payments, run.broadcasts)


def test_baselines_are_grid_fees_and_never_below_the_best_single_fee():
    grid = fee_grid()
    for kind in ("low", "high"):
        market = small(kind, 5)
        base = baselines(market)
        assert base.single_fee_ppm in grid
        assert set(base.hindsight_fees_ppm) <= set(grid)
        assert all(f in grid for pair in base.oracle_fees_ppm for f in pair)
        assert base.oracle_msat >= base.hindsight_msat >= base.single_msat > 0
        # the figure is what a fresh simulation of those fees earns
        start = history_snapshot(market)
        earned0 = sum(start.earned_msat)
        sim = static_run(market, base.oracle_fees_ppm, start)
        assert sum(sim.earned_msat) - earned0 == base.oracle_msat


def test_dense_baselines_are_exact():
    market = build_market("dense", 3, days=2, history_days=1, channels=6)
    base = baselines(market)
    assert base.oracle_msat >= base.hindsight_msat >= base.single_msat
    start = history_snapshot(market)
    earned0 = sum(start.earned_msat)
    sim = static_run(market, [(f, f) for f in base.hindsight_fees_ppm], start)
    assert sum(sim.earned_msat) - earned0 == base.hindsight_msat


def test_sling_refill_costs(tmp_path):
    with SimNode(tmp_path) as node:
        node.set_plugin_loaded("sling", True)
        dest = node.add_channel(capacity_sats=4_000_000, local_sats=200_000, fee_ppm=100)
        src = node.add_channel(capacity_sats=4_000_000, local_sats=3_800_000, fee_ppm=100)
        node.sling.costs = RefillCosts({dest: 400}, sigma=0.0, fail_share=0.0)
        node.sling.add_job(dest, "pull", amount=100_000, maxppm=300, candidates=[src])
        node.sling.rpc_go([])
        assert node.sling.step() == [] and node.sling.state_of(dest) == ["NoCheapRoute"]
        node.sling.add_job(dest, "pull", amount=100_000, maxppm=500, candidates=[src])
        node.sling.rpc_go([])
        moves = node.sling.step(1_700_000_000 + DAY)
        assert moves == [{"scid": dest, "partner": src, "ok": True, "amount_msat": 100_000_000,
                          "fee_msat": 40_000}]
        assert node.channel(dest)["local_msat"] == 300_000_000
        assert node.channel(src)["local_msat"] == 3_800_000_000 - 100_000_000 - 40_000
        node.sling.costs.fail_share = 1.0
        assert [m["ok"] for m in node.sling.step()] == [False]
        assert node.sling.rpc_stats([dest, True])["failures_in_time_window"]["total_rebalances_tried"] == 1


@pytest.mark.parametrize("kind", ["high", "low", "dense"])
def test_markets_are_what_the_bench_says(kind):
    market = build_market(kind, 1)
    best = [b for pair in market.best_fees() for b in pair]
    lo, hi = {"high": (40, 1500), "low": (5, 100), "dense": (40, 1500)}[kind]
    assert min(best) >= lo * 0.4 and max(best) <= hi * 2     # shifts halve or double
    if kind != "dense":
        assert sum(c.shifts for c in market.channels) == 4
        rates = [c.curves[0].per_hour(b) for c, (b, _) in zip(market.channels, market.best_fees())]
        assert 0.1 * 0.99 <= min(rates) and max(rates) <= 5 * 1.01
    assert abs(sum(c.inbound_weight for c in market.channels) - 1) < 1e-9
