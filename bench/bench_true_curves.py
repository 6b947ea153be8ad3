#!/usr/bin/env python3
"""Where the economics bench's gap comes from: learning the demand, or pricing it.

The same markets, arrivals and baselines as bench_economics.py, and the same plugin
in-process, run twice per seed:
  learned      the plugin as shipped: its demand curves estimated from the evidence;
  true curves  the same plugin with one stage replaced: each channel's demand posterior is
               the market's true curve of the regime in force (a point mass, so no probing),
               its liquidity, exploration, gossip, bounds and rebalancing stages unchanged.
The true-curves run is also made without sling (fees alone). Each is scored like the
economics bench: the whole run, fees earned less rebalance fees, against the per-channel
static fees in hindsight (no rebalancing).

What the plugin earns with the true curves bounds what better learning alone can bring; what
it still lacks against hindsight there is lost by the pricing and rebalancing stages. A
diagnostic for the fee logic, not a goal of its own. Printed, never asserted.

    .venv/bin/python bench/bench_true_curves.py                   # high and low, 8 seeds
    .venv/bin/python bench/bench_true_curves.py --markets high --seeds 2
"""
import argparse
import dataclasses
import math
import multiprocessing
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from modules import demand as demand_model  # noqa: E402
from modules import fee_controller, fee_cycle  # noqa: E402
from simnode.market import Market, best_fee, build_market  # noqa: E402
from simnode.market_baselines import baselines  # noqa: E402
from simnode.market_run import run_epoch, run_plugin  # noqa: E402

MAX_SCALE_FEE_PPM = 20_000


@dataclasses.dataclass(frozen=True)
class TrueCurve(demand_model.DemandCurve):
    """A demand posterior that is the market's curve itself (no uncertainty)."""
    true: object = None

    def rate_per_hour(self, fee_ppm: float) -> float:
        return self.true.per_hour(max(fee_ppm, 0))

    def rates_per_hour(self, fees_ppm):
        return [self.true.per_hour(max(f, 0)) for f in fees_ppm]

    def log_scale_sd(self) -> float:
        return 0.0

    def describe(self) -> str:
        return "true curve " + self.true.describe()


def use_true_curves(market: Market, epoch: float) -> None:
    """In this (worker) process: the fee stages get the market's true curves."""
    by_key = {}
    for c in market.channels:
        by_key[c.scid] = c
        by_key[c.peer_id] = c
    clock = [epoch]
    decide_all = fee_controller.decide_all_fees

    def timed(inputs, states, config, now):
        clock[0] = now
        return decide_all(inputs, states, config, now)

    estimate_all = demand_model.estimate_all
    peaks: Dict[Tuple[int, int], int] = {}

    def true_curves(evidence_by_key, fee_by_key, network_fee_by_key=None):
        learned = estimate_all(evidence_by_key, fee_by_key)   # for amounts and counts (the truth needs no prior)
        regime = market.regime(max(0.0, clock[0] - epoch))
        out = {}
        for key, curve in learned.items():
            spec = by_key[key]
            true = spec.curves[regime]
            peak = peaks.setdefault((id(spec), regime), best_fee(true, 1, MAX_SCALE_FEE_PPM))
            out[key] = TrueCurve(fee_by_key[key], (float(peak),), (1.0,),
                                 (math.log(max(true.per_hour(fee_by_key[key]), 1e-12)),),
                                 curve.mean_amount_msat or spec.amount_msat, curve.arrivals, true=true)
        return out

    fee_cycle.decide_all_fees = timed
    fee_controller.demand_model.estimate_all = true_curves


def run_task(task: Tuple[str, int, float, str]) -> Tuple[str, int, str, float, float]:
    kind, seed, days, variant = task
    market = build_market(kind, seed, days=days)
    base = baselines(market)
    epoch = run_epoch()
    if variant != "learned":
        use_true_curves(market, epoch)
    run = run_plugin(market, sling=variant != "true, fees only", epoch=epoch)
    per_day = sorted(len(ts) / days for ts in run.broadcasts)
    return kind, seed, variant, run.net_msat / base.hindsight_msat, statistics.median(per_day)


VARIANTS = ("learned", "true curves", "true, fees only")


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markets", default="high,low")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--days", type=float, default=10)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    kinds = [k for k in args.markets.split(",") if k]
    tasks = [(k, s, args.days, v) for k in kinds for s in range(args.first_seed, args.first_seed + args.seeds)
             for v in VARIANTS]
    began, cpu0 = time.time(), time.process_time()
    # one process per task: the true-curves patch must not leak into a learned run
    with multiprocessing.get_context("fork").Pool(args.jobs, maxtasksperchild=1) as pool:
        results = pool.map(run_task, tasks, chunksize=1)
    cpu = time.process_time() - cpu0 + sum(os.times()[2:4])
    print(f"command: {' '.join(['.venv/bin/python', 'bench/bench_true_curves.py'] + (argv or sys.argv[1:]))}")
    for kind in kinds:
        print(f"\n== market {kind}: {args.seeds} seeds, {args.days:g} days; net / per-channel hindsight ==")
        print("seed " + "".join(f"{v:>18}" for v in VARIANTS) + "   (broadcasts/ch/day, median)")
        table = {}
        for k, seed, variant, ratio, bc in results:
            if k == kind:
                table.setdefault(seed, {})[variant] = (ratio, bc)
        for seed in sorted(table):
            print(f"{seed:4d} " + "".join(f"{table[seed][v][0]:>12.3f}x {table[seed][v][1]:4.2f}" for v in VARIANTS))
        for label, pick in (("mean", statistics.mean), ("worst", min)):
            print(f"{label:5s}" + "".join(f"{pick(table[s][v][0] for s in table):>12.3f}x     " for v in VARIANTS))
    print(f"\nwall {time.time() - began:.0f} s on {args.jobs} worker processes, CPU {cpu:.0f} s")


if __name__ == "__main__":
    main()
