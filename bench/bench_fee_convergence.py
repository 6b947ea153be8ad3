#!/usr/bin/env python3
"""Convergence bench of the fee controller on a simulated market (bench/market.py).

Channels with known demand curves (exponential and logistic cut-offs, one that shifts
mid-run) start at one common fee. Simulated time advances in fee cycles; every cycle each
channel's `decide_fee` runs with the state it returned last time, with the revenue and the
forward count since its last change (as the plugin's caller computes them from the
database), and "set" decisions change the channel's fee. Reported after the warm-up:

* the controller's revenue as a share of the oracle's (each curve's revenue-maximising
  fee, recomputed after the shift), in expected msat of the fees it chose (the headline)
  and in the noisy msat it actually earned;
* the best single static fee for all channels (grid search), and controller / static;
* fee broadcasts per channel per day (median and max, whole run and after the warm-up).

Goals: >= 90% of oracle after the warm-up, >= 1.3x the best static fee, median <= 1
broadcast per channel per day, none above 4. Figures are printed, not asserted.

    /tmp/tv/bin/python bench/bench_fee_convergence.py [--seeds 10] [--days 60] [--start-fee 100]
"""
import argparse
import math
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.market import (ExponentialDemand, LogisticDemand, Market, ShiftingDemand,  # noqa: E402
                          SimChannel)
from modules import fee_stages  # noqa: E402
from modules.config import default_config  # noqa: E402
from modules.fee_controller import FeeInputs, decide_fee  # noqa: E402

T0 = 1_700_000_000  # unix seconds at simulated hour 0
SAT = 1000


def log_uniform(rng, lo, hi):
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def build_channels(rng: random.Random, count: int, start_fee: int, shift_day: float):
    channels = []
    for i in range(count):
        rate = log_uniform(rng, 1.0, 20.0)
        if i == count - 1:   # the shifting one: a competitor undercuts on shift_day
            demand = ShiftingDemand(ExponentialDemand(rate, 600.0),
                                    LogisticDemand(rate, 200.0, 30.0), shift_day * 24)
        elif i % 3 == 2:
            cutoff = log_uniform(rng, 60, 1500)
            demand = LogisticDemand(rate, cutoff, cutoff * rng.uniform(0.08, 0.25))
        else:
            demand = ExponentialDemand(rate, log_uniform(rng, 40, 1500))
        capacity = int(log_uniform(rng, 2e6, 2e7)) * SAT
        channels.append(SimChannel(
            scid=f"{800000 + i}x1x0", peer_id=f"02{i:064x}", capacity_msat=capacity,
            local_msat=int(capacity * rng.uniform(0.4, 0.9)), demand=demand,
            amount_msat=int(log_uniform(rng, 1e5, 2e6)) * SAT, fee_ppm=start_fee))
    return channels


def run(seed: int, args, config):
    rng = random.Random(seed)
    channels = build_channels(rng, args.channels, args.start_fee, args.shift_day)
    market = Market(channels, seed=seed * 7919 + 1)
    dt = args.cycle_minutes / 60
    steps = int(round(args.days * 24 / dt))
    warm = args.warmup_days * 24
    lo, hi = config.min_fee_ppm, config.max_fee_ppm
    states = {c.scid: None for c in channels}
    sets = {c.scid: [] for c in channels}            # hours of each broadcast
    ctrl_expected = {c.scid: 0.0 for c in channels}
    oracle_expected = {c.scid: 0.0 for c in channels}
    earned_at_warm = {}
    oracle_cache = {}

    def oracle(ch, t):
        key = (ch.scid, getattr(ch.demand, "current", lambda _t: ch.demand)(t))
        if key not in oracle_cache:
            oracle_cache[key] = Market.optimal_fee(ch, t, lo, hi)
        return oracle_cache[key]

    for k in range(steps):
        t = k * dt
        if t >= warm:
            for ch in channels:
                ctrl_expected[ch.scid] += ch.expected_revenue_msat_per_hour(ch.fee_ppm, t) * dt
                oracle_expected[ch.scid] += ch.expected_revenue_msat_per_hour(oracle(ch, t), t) * dt
        if abs(t - warm) < 1e-9:
            earned_at_warm = {c.scid: c.earned_msat for c in channels}
        market.step(t, dt)
        now_h = t + dt
        for ch in channels:
            state = states[ch.scid]
            since_h = (state.last_change_at - T0) / 3600 if state else now_h
            earned, forwards = ch.earned_since(since_h)
            inputs = FeeInputs(channel=ch.to_channel(), flow=None, earned_msat_since_change=earned,
                               has_routed_out_ever=ch.forwards > 0,
                               forwards_since_change=None if args.no_counts else forwards)
            d = decide_fee(inputs, state, config, T0 + now_h * 3600)
            if d.action == "set":
                ch.fee_ppm = d.new_fee_ppm
                sets[ch.scid].append(now_h)
            states[ch.scid] = d.new_state

    end = steps * dt
    static_fee, static_expected = Market.best_static_fee(
        channels, [(warm, end)], sorted({max(lo, min(hi, round(1.05 ** i))) for i in range(170)}))
    return dict(channels=channels, sets=sets, ctrl=ctrl_expected, oracle=oracle_expected,
                realised={c.scid: c.earned_msat - earned_at_warm.get(c.scid, 0) for c in channels},
                static_fee=static_fee, static=static_expected, end=end, warm=warm,
                oracle_fee=lambda ch, t: oracle(ch, t), states=states)


def broadcast_stats(sets, start_h, end_h):
    days = (end_h - start_h) / 24
    per_day = [len([h for h in hs if start_h < h <= end_h]) / days for hs in sets.values()]
    worst_day = 0
    for hs in sets.values():
        counts = {}
        for h in hs:
            if start_h < h <= end_h:
                counts[int((h - 1e-9) // 24)] = counts.get(int((h - 1e-9) // 24), 0) + 1
        worst_day = max([worst_day] + list(counts.values()))
    return statistics.median(per_day), max(per_day), worst_day


def summarise(r):
    ctrl, oracle = sum(r["ctrl"].values()), sum(r["oracle"].values())
    realised = sum(r["realised"].values())
    med_all, max_all, worst_all = broadcast_stats(r["sets"], 0, r["end"])
    med_post, max_post, _ = broadcast_stats(r["sets"], r["warm"], r["end"])
    return dict(pct_oracle=100 * ctrl / oracle, pct_oracle_realised=100 * realised / oracle,
                static_fee=r["static_fee"], pct_static=100 * r["static"] / oracle,
                vs_static=ctrl / r["static"], med_all=med_all, max_all=max_all,
                worst_day=worst_all, med_post=med_post, max_post=max_post)


def print_channels(r, args):
    print(f"\nper channel (seed {args.seed}), revenue after day {args.warmup_days:g}:")
    print(f"{'scid':>11} {'demand curve':<44} {'amount':>8} {'oracle':>10} {'final':>6} "
          f"{'%oracle':>7} {'sets':>5} {'/day':>5}")
    for ch in r["channels"]:
        o_start, o_end = r["oracle_fee"](ch, r["warm"]), r["oracle_fee"](ch, r["end"] - 1)
        oracle_txt = f"{o_start}" if o_start == o_end else f"{o_start}->{o_end}"
        pct = 100 * r["ctrl"][ch.scid] / r["oracle"][ch.scid] if r["oracle"][ch.scid] else float("nan")
        n = len(r["sets"][ch.scid])
        desc = ch.demand.describe()
        if len(desc) > 44:
            desc = desc[:41] + "..."
        print(f"{ch.scid:>11} {desc:<44} {ch.amount_msat / 1e6:7.0f}k {oracle_txt:>10} "
              f"{ch.fee_ppm:>6} {pct:6.1f}% {n:>5} {n / (r['end'] / 24):5.2f}")
    print("  (amount: mean sats per forward, in thousands; oracle and final: fee ppm)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="independent markets (seed, seed+1, ...)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--channels", type=int, default=20)
    p.add_argument("--days", type=float, default=60)
    p.add_argument("--warmup-days", type=float, default=14)
    p.add_argument("--shift-day", type=float, default=30)
    p.add_argument("--cycle-minutes", type=float, default=30, help="fee cycle (and market step)")
    p.add_argument("--start-fee", type=int, default=100, help="every channel's fee at the start")
    p.add_argument("--no-counts", action="store_true",
                   help="do not pass forward counts (the controller then estimates or goes without)")
    p.add_argument("--tune", action="append", default=[], metavar="NAME=VALUE",
                   help="override a tunable of modules/fee_stages.py, e.g. SETTLE_HOURS=48")
    args = p.parse_args(argv)
    for item in args.tune:
        name, value = item.split("=", 1)
        if not hasattr(fee_stages, name):
            p.error(f"--tune: modules.fee_stages has no {name}")
        setattr(fee_stages, name, type(getattr(fee_stages, name))(float(value)))
    config = default_config()
    print("command: /tmp/tv/bin/python bench/bench_fee_convergence.py " + " ".join(argv or sys.argv[1:]))
    print(f"market: {args.channels} channels, {args.days:g} days, fee cycle {args.cycle_minutes:g} min, "
          f"start fee {args.start_fee} ppm, one curve shifts on day {args.shift_day:g}, "
          f"balances static above the scarcity threshold, no flow bias (flow=None)")
    print(f"config: observation {config.fee_min_observation_hours:g} h, step "
          f"{config.fee_step_percent:g}% (min {config.fee_step_min_ppm} ppm), hysteresis "
          f"{config.fee_change_min_percent:g}% / {config.fee_broadcast_min_interval_seconds / 3600:g} h, "
          f"fees [{config.min_fee_ppm}, {config.max_fee_ppm}] ppm")
    started = time.time()
    rows = []
    first = None
    for seed in range(args.seed, args.seed + args.seeds):
        r = run(seed, args, config)
        first = first or r
        rows.append((seed, summarise(r)))
    print(f"\n{'seed':>4} {'%oracle':>8} {'(earned)':>9} {'static fee':>10} {'%oracle':>8} "
          f"{'ctrl/static':>11} {'sets/ch/day med':>15} {'max':>5} {'max 1 day':>9} "
          f"{'after warm-up med':>17} {'max':>5}")
    for seed, s in rows:
        print(f"{seed:>4} {s['pct_oracle']:7.1f}% {s['pct_oracle_realised']:8.1f}% {s['static_fee']:>10} "
              f"{s['pct_static']:7.1f}% {s['vs_static']:10.2f}x {s['med_all']:15.2f} {s['max_all']:5.2f} "
              f"{s['worst_day']:>9} {s['med_post']:17.2f} {s['max_post']:5.2f}")

    def mean(key):
        return statistics.mean(s[key] for _, s in rows)
    print(f"mean {mean('pct_oracle'):7.1f}% {mean('pct_oracle_realised'):8.1f}% {'':>10} "
          f"{mean('pct_static'):7.1f}% {mean('vs_static'):10.2f}x {mean('med_all'):15.2f} "
          f"{mean('max_all'):5.2f} {max(s['worst_day'] for _, s in rows):>9} "
          f"{mean('med_post'):17.2f} {mean('max_post'):5.2f}")
    print_channels(first, args)
    worst = min(s["pct_oracle"] for _, s in rows)
    print(f"\ngoals (mean over {len(rows)} seeds; worst seed in brackets):")
    print(f"  >= 90% of oracle after warm-up   {mean('pct_oracle'):6.1f}%  ({worst:.1f}%)")
    print(f"  >= 1.3x best static fee          {mean('vs_static'):6.2f}x  "
          f"({min(s['vs_static'] for _, s in rows):.2f}x)")
    print(f"  median <= 1 broadcast/ch/day     {mean('med_all'):6.2f}   "
          f"({max(s['med_all'] for _, s in rows):.2f}) whole run; "
          f"{mean('med_post'):.2f} after warm-up")
    print(f"  no channel above 4/day           {max(s['max_all'] for _, s in rows):6.2f}   "
          f"(most in any single day: {max(s['worst_day'] for _, s in rows)})")
    print(f"\nran in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
