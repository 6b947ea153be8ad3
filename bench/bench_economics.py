#!/usr/bin/env python3
"""Economic bench (issues 7 and 21): what the plugin earns in a family of simulated markets,
against fixed fees chosen in hindsight and against an operator's usual fixed fee plus a
standard rebalancer, on the same arrivals.

The worlds (simnode/market.py KINDS; --worlds, alias --markets). All but dense drain: a
forward needs the out channel's balance (refused ones reach the plugin as local_failed 4103),
roles source / sink / balanced empty and fill channels so rebalancing matters, and a third
of the channels see their demand shift at mid-run.

  high        12 channels, 0.1-5 forwards/hour at the best fee, revenue-maximising fees
              40-1500 ppm (exponential curves or logistic cliffs), start fee 100 (below most),
              refill cost 50-1000 ppm, 14 days of pre-history at the start fees to hydrate
  low         as high with best fees 5-100 ppm, start fee 50 (above most), refill 5-80 ppm
  high-new    as high with no pre-history (nothing to hydrate) and exponential curves only
  routes      competing routes, no pre-history: per channel a competitor price (30-2000 ppm,
              log-uniform) and spread (x1.35-x2.7); a sender takes our channel only when its fee
              is below its own alternative route's cost (log-normal around the competitor's
              price), a captive 2-6 % has no alternative and pays up to its budget (~1200 ppm),
              so some revenue curves have two humps; a daily demand cycle (x(1 + 0.6 sin)), the
              competitor's price drifting daily (~10 %/day in log) and moving x0.5-x2 at mid-run
              on a third of the channels; failure memory (after a refusal for balance, arrivals
              on that channel x (1 - 0.5 exp(-dt / 2 h))); heavier-tailed amounts (sigma 1.0)
  routes-old  routes with 14 days of pre-history and 15 channels, the last 3 of which "open"
              at mid-run: they are on the node from the start (adding a channel to the
              simulated node mid-run is not done), but no forward leaves or enters through
              them before mid-run
  dense       20 channels, 1-20 forwards/h at zero fee, balances that do not move, one
              channel undercut at mid-run (the old convergence bench's world); fees only

The plugin (simnode/market_run.py) is the real one, in-process, on a simulated node: its
start-up (hygiene, hydration), then its own flow / fee / rebalance loops and job watch at
simulated times, every forward also delivered as a forward_event, sling simulated with
per-destination refill costs. Variants: with sling loaded (as operators run it: the goals
are judged on it), without sling (fees only), and left alone (start fees, no rebalancing).

Scores are the whole run, warm-up included: the fees earned minus the rebalance fees paid,
against references on the same arrivals with the same market mechanics (failure memory,
cycle, drift: MarketSim replays them at fixed fees):
* simnode/market_baselines.py, no rebalancing: the best single static fee, per-channel static
  fees in hindsight (coordinate descent) and the oracle (per channel and demand regime in
  hindsight; n/a in the routes worlds, where demand drifts day by day);
* simnode/standard_rebalancer.py ("/std"): the best single fee on every channel plus, once an
  hour, a sling pull of any channel below 30 % local to 50 % at maxppm = fee / 2 through the
  same simulated sling and refill costs, within the plugin's default daily budget
  (daily-budget-sats, 5000 sat); scored net of its rebalance fees.
References are cached under bench/out/baselines-cache/ (gitignored), keyed by world, seed,
days, budget and a hash of the market code, so repeated screens only pay for the plugin.
For dense also the old convergence figure: expected revenue of the fees in force after a
14-day warm-up, as a share of each curve's revenue-maximising fee per regime.

Printed per world and run length (--days 10,30): per seed and mean / worst, the plugin's
net against hindsight, best single, oracle, fixed + standard rebalancer, left alone; median
broadcasts per channel per day and the most in one day; rebalance spend. Then the family
table (one row per world), the worst seed and the worst world, and the goals of issue 21 per
world: at 30 days mean >= 1.0x hindsight and >= 1.2x fixed + standard rebalancer, worst seed
>= 0.8x hindsight; at 10 days mean >= 0.9x hindsight and >= 1.0x best single; median <= 1
broadcast per channel per day; dense >= 90 % of the oracle. Printed, never asserted.

    .venv/bin/python bench/bench_economics.py     # the family: every world, 20 seeds, 10 and 30 days,
                                                  # dense 5 seeds (hours on 2 cores)
    .venv/bin/python bench/bench_economics.py --seeds 4 --days 10 --dense-seeds 0 --no-fees-only
                                                  # a screen of a change (~7 min on 2 cores)
    .venv/bin/python bench/bench_economics.py --worlds low --seeds 1 --dense-seeds 0 --dump 1
    .venv/bin/python bench/bench_economics.py --set demand_half_life_hours=48

From a tuning script: `evaluate("routes", seed, days=10, overrides={...})` returns the
figures of one seed; simnode.market_run.run_plugin, simnode.market_baselines.baselines and
simnode.standard_rebalancer.run_standard are the parts.
"""
import argparse
import dataclasses
import hashlib
import math
import multiprocessing
import os
import pickle
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from simnode.market import (DAY, SAT, Market, best_fee, build_market,  # noqa: E402
                            expected_msat, history_snapshot)
from simnode.market_baselines import Baselines, baselines, static_run  # noqa: E402
from simnode.market_run import PluginRun, run_plugin  # noqa: E402
from simnode.standard_rebalancer import StandardRun, run_standard  # noqa: E402

SLING, FEES, BASE = "sling", "fees", "baselines"
WARMUP_DAYS = 14            # dense: the old convergence figure is scored after this
GOALS = {"broadcasts": 1.0, "dense_oracle": 0.90}
# issue 21, per world: (days, figure, at least); figures are the plugin-with-sling's net against
GOALS_21 = [(30, "mean_hindsight", 1.0), (30, "mean_standard", 1.2), (30, "worst_hindsight", 0.8),
            (10, "mean_hindsight", 0.9), (10, "mean_single", 1.0)]
GOAL_TEXT = {"mean_hindsight": "mean >= {:.1f}x per-channel hindsight", "mean_standard":
             "mean >= {:.1f}x fixed fee + standard rebalancer", "worst_hindsight":
             "worst seed >= {:.1f}x hindsight", "mean_single": "mean >= {:.1f}x best single fee"}
WORLDS = ("high", "low", "high-new", "routes", "routes-old")
CACHE_DIR = os.path.join(ROOT, "bench", "out", "baselines-cache")
CACHE_SOURCES = ("simnode/market.py", "simnode/market_baselines.py", "simnode/standard_rebalancer.py",
                 "simnode/sling.py", "simnode/state.py")


@dataclasses.dataclass
class References:
    """What the plugin is scored against on one seed: the fixed-fee baselines and the best
    single fee run with the standard rebalancer (no standard run for dense: it does not drain)."""
    base: Baselines
    standard: Optional[StandardRun]


# --- one task (a worker process runs it) -------------------------------------------------------
def run_task(task: Tuple[str, int, float, str, Dict[str, Any]]):
    kind, seed, days, what, overrides = task
    cpu0 = time.process_time()
    market = build_market(kind, seed, days=days)
    if what == BASE:
        result = references(market, _budget(overrides))
    else:
        result = run_plugin(market, sling=(what == SLING), overrides=overrides)
    return task[:4], result, time.process_time() - cpu0


def market_code_hash() -> str:
    """Of the code the references depend on: a change there invalidates the cache."""
    h = hashlib.sha1()
    for rel in CACHE_SOURCES:
        with open(os.path.join(ROOT, rel), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def references(market: Market, budget_sat: int, cache: bool = True) -> References:
    """Baselines and the standard rebalancer's run, from the disk cache when they were
    computed before for this world, seed, days, budget and market code."""
    path = os.path.join(CACHE_DIR, f"{market.kind}-s{market.seed}-d{market.days:g}-b{budget_sat}-"
                                   f"{market_code_hash()}-v2.pkl")
    if cache and os.path.exists(path):
        with open(path, "rb") as f:   # a plain tuple of simnode classes: loads from any importer
            return References(*pickle.load(f))
    base = baselines(market)
    standard = run_standard(market, base.single_fee_ppm, budget_sat) if market.drains else None
    if cache:
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump((base, standard), f)
        os.replace(tmp, path)
    return References(base, standard)


def evaluate(kind: str, seed: int, days: float = 10, overrides: Optional[Dict[str, Any]] = None,
             variants: Sequence[str] = (SLING, FEES)) -> Dict[str, Any]:
    """One seed's figures, in this process (for tuning scripts)."""
    results = {what: run_task((kind, seed, days, what, overrides or {}))[1] for what in (BASE, *variants)}
    return seed_figures(build_market(kind, seed, days=days), results)


# --- figures ---------------------------------------------------------------------------------------
def broadcast_figures(run: PluginRun) -> Dict[str, Any]:
    per_day = [len(ts) / run.days for ts in run.broadcasts]
    return {"median": statistics.median(per_day), "max": max(per_day),
            "most_in_a_day": run.most_broadcasts_in_a_day(), "per_channel": per_day}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def run_figures(run: PluginRun, refs: References) -> Dict[str, Any]:
    base, net = refs.base, run.net_msat
    arrived = run.total("arrived")
    return {
        "vs_standard": ratio(net, refs.standard.net_msat) if refs.standard else float("nan"),
        "net_sat": net / SAT, "earned_sat": sum(run.earned_msat) / SAT,
        "rebalance_sat": run.rebalance_fee_msat / SAT,
        "vs_single": net / base.single_msat if base.single_msat else float("nan"),
        "vs_hindsight": net / base.hindsight_msat if base.hindsight_msat else float("nan"),
        "vs_oracle": net / base.oracle_msat if base.oracle_msat else float("nan"),
        "broadcasts": broadcast_figures(run),
        "unmet": (run.total("failed") + run.total("no_entry")) / arrived if arrived else 0.0,
        "most_24h_sat": run.most_paid_in_24h_msat() / SAT,
        "jobs": len(run.jobs), "jobs_moved": sum(1 for j in run.jobs if j.moved_msat > 0),
        "moved_sat": run.moved_msat / SAT, "attempts": run.attempts,
        "errors": sum(run.loop_errors.values()), "warnings": run.warnings,
        "wall_s": run.wall_s,
    }


def seed_figures(market: Market, results: Dict[str, Any]) -> Dict[str, Any]:
    refs: References = results[BASE]
    base, std = refs.base, refs.standard
    out: Dict[str, Any] = {"seed": market.seed, "kind": market.kind, "days": market.days,
                           "standard_sat": std.net_msat / SAT if std else float("nan"),
                           "standard_paid_sat": std.rebalance_fee_msat / SAT if std else float("nan"),
                           "standard_vs_hindsight": ratio(std.net_msat, base.hindsight_msat) if std else float("nan"),
                           "left_alone_vs_hindsight": base.left_alone_msat / base.hindsight_msat
                           if base.hindsight_msat else float("nan"),
                           "single_sat": base.single_msat / SAT, "single_fee": base.single_fee_ppm,
                           "hindsight_sat": base.hindsight_msat / SAT, "oracle_sat": base.oracle_msat / SAT}
    for what in (SLING, FEES):
        if what in results:
            out[what] = run_figures(results[what], refs)
    if market.kind == "dense":
        run = results.get(FEES) or results.get(SLING)
        if run is not None:
            out["curve_oracle"] = curve_share(market, run)
    return out


def curve_share(market: Market, run: PluginRun) -> float:
    """The old convergence figure: expected revenue of the fees in force after the warm-up,
    over that of each curve's best fee per regime."""
    warm, end = min(WARMUP_DAYS * DAY, market.run_s / 2), market.run_s
    got = oracle = 0.0
    for x, c in enumerate(market.channels):
        got += expected_msat(market, x, run.fee_timeline[x], warm, end)
        best = [(0.0, best_fee(c.curves[0]))]
        if market.shift_s is not None:
            best.append((market.shift_s, best_fee(c.curves[1])))
        oracle += expected_msat(market, x, best, warm, end)
    return got / oracle if oracle else float("nan")


# --- printing ----------------------------------------------------------------------------------------
def fmt_x(v: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(v) else f"{v:5.{digits}f}x"


def print_market(kind: str, rows: List[Dict[str, Any]], budget_sat: int, days: float) -> Dict[str, Any]:
    print(f"\n== world {kind}: {len(rows)} seeds, {days:g} days (whole run scored; sats) ==")
    dense = kind == "dense"
    head = (f"{'seed':>4} {'hindsight':>10} {'single':>9} {'@ppm':>5} | {'plugin net':>10} {'/single':>7} "
            f"{'/hind':>6} {'/oracle':>7} {'/std':>6} {'reb paid':>8} {'jobs':>7} {'unmet':>6} {'bc/ch/d':>7} {'max':>5} "
            f"{'1 day':>5} | {'no sling':>9} {'/hind':>6} | {'alone/h':>7}")
    if dense:
        head += f" | {'curve oracle':>12}"
    print(head)
    for r in rows:
        s = r.get(SLING) or r.get(FEES)
        f = r.get(FEES)
        line = (f"{r['seed']:>4} {r['hindsight_sat']:10.0f} {r['single_sat']:9.0f} {r['single_fee']:5d} | "
                f"{s['net_sat']:10.0f} {fmt_x(s['vs_single']):>7} {fmt_x(s['vs_hindsight']):>6} "
                f"{fmt_x(s['vs_oracle']):>7} {fmt_x(s['vs_standard']):>6} {s['rebalance_sat']:8.0f} {s['jobs_moved']:>3}/{s['jobs']:<3} "
                f"{100 * s['unmet']:5.1f}% {s['broadcasts']['median']:7.2f} {s['broadcasts']['max']:5.2f} "
                f"{s['broadcasts']['most_in_a_day']:5d} | ")
        line += (f"{f['net_sat']:9.0f} {fmt_x(f['vs_hindsight']):>6} | " if f and SLING in r else f"{'-':>9} {'-':>6} | ")
        line += f"{fmt_x(r['left_alone_vs_hindsight']):>7}"
        if dense and "curve_oracle" in r:
            line += f" | {100 * r['curve_oracle']:11.1f}%"
        print(line)
    plugin = [r.get(SLING) or r.get(FEES) for r in rows]
    print(f"  (plugin {'without' if dense else 'with'} sling; /single, /hind, /oracle: its net against the best single "
          f"static fee, per-channel static fees in hindsight, the oracle (n/a where demand drifts), the best "
          f"single fee with the standard rebalancer (net of its rebalance fees); jobs: sling jobs that moved something / "
          f"started; unmet: arrivals refused for balance or without an entry channel with room; bc/ch/d: "
          f"broadcasts per channel per day, median over channels, max: the busiest channel, 1 day: most of one "
          f"channel in one day; alone/h: start fees, no rebalancing, against hindsight"
          + ("; curve oracle: expected revenue after the warm-up against each curve's best fee)" if dense else ")"))

    def mean(key, src=plugin):
        return statistics.mean(p[key] for p in src)
    worst_h = min(p["vs_hindsight"] for p in plugin)
    print(f"{'mean':>4} {statistics.mean(r['hindsight_sat'] for r in rows):10.0f} "
          f"{statistics.mean(r['single_sat'] for r in rows):9.0f} {'':5} | {mean('net_sat'):10.0f} "
          f"{fmt_x(mean('vs_single')):>7} {fmt_x(mean('vs_hindsight')):>6} {fmt_x(mean('vs_oracle')):>7} "
          f"{fmt_x(mean('vs_standard')):>6} {mean('rebalance_sat'):8.0f} {'':7} {100 * mean('unmet'):5.1f}% "
          f"{statistics.mean(p['broadcasts']['median'] for p in plugin):7.2f}")
    print(f"{'worst':>5} {'':9} {'':9} {'':5} | {min(p['net_sat'] for p in plugin):10.0f} "
          f"{fmt_x(min(p['vs_single'] for p in plugin)):>7} {fmt_x(worst_h):>6} "
          f"{fmt_x(min(p['vs_oracle'] for p in plugin)):>7} {fmt_x(min(p['vs_standard'] for p in plugin)):>6} "
          f"{max(p['rebalance_sat'] for p in plugin):8.0f} "
          f"{'':7} {100 * max(p['unmet'] for p in plugin):5.1f}% "
          f"{max(p['broadcasts']['median'] for p in plugin):7.2f} "
          f"{max(p['broadcasts']['max'] for p in plugin):5.2f} "
          f"{max(p['broadcasts']['most_in_a_day'] for p in plugin):5d}")
    fees_only = [r[FEES] for r in rows if FEES in r and SLING in r]
    if fees_only:
        print(f"  without sling (fees only): mean {fmt_x(mean('vs_hindsight', fees_only))} hindsight, "
              f"{fmt_x(mean('vs_single', fees_only))} single, worst {fmt_x(min(p['vs_hindsight'] for p in fees_only))}"
              f" hindsight; unmet {100 * mean('unmet', fees_only):.1f}%")
    print(f"  left alone (start fees, no rebalancing): mean "
          f"{fmt_x(statistics.mean(r['left_alone_vs_hindsight'] for r in rows))} hindsight")
    if not dense:
        print(f"  fixed fee + standard rebalancer (best single fee, pulls below 30 % to 50 % at fee/2): mean net "
              f"{statistics.mean(r['standard_sat'] for r in rows):.0f} sat = "
              f"{fmt_x(statistics.mean(r['standard_vs_hindsight'] for r in rows))} hindsight, paying "
              f"{statistics.mean(r['standard_paid_sat'] for r in rows):.0f} sat per run")
    with_sling = [r[SLING] for r in rows if SLING in r]
    if with_sling:
        print(f"  rebalancing: {statistics.mean(p['rebalance_sat'] for p in with_sling):.0f} sat paid per run on "
              f"average ({statistics.mean(p['moved_sat'] for p in with_sling) / 1000:.0f} k sat moved), budget "
              f"{budget_sat} sat/day x {days:g} days; most paid in any 24 h {max(p['most_24h_sat'] for p in with_sling):.0f}"
              f" sat; jobs started {sum(p['jobs'] for p in with_sling)}, moved something "
              f"{sum(p['jobs_moved'] for p in with_sling)}, sling attempts {sum(p['attempts'] for p in with_sling)}")
    errors = sum(p["errors"] for r in rows for p in (r.get(SLING), r.get(FEES)) if p)
    warnings = sum(p["warnings"] for r in rows for p in (r.get(SLING), r.get(FEES)) if p)
    print(f"  plugin loop errors {errors}, warnings logged {warnings}")
    worst_row = min(rows, key=lambda r: (r.get(SLING) or r.get(FEES))["vs_hindsight"])
    return {"mean_hindsight": mean("vs_hindsight"), "mean_single": mean("vs_single"), "worst_hindsight": worst_h,
            "mean_standard": mean("vs_standard"), "worst_seed": worst_row["seed"], "days": days,
            # the seeds pooled (sum of nets over sum of nets): one near-zero reference seed
            # does not swamp it as it does the mean of ratios
            "pooled_standard": ratio(sum(p["net_sat"] for p in plugin), sum(r["standard_sat"] for r in rows)),
            "left_alone": statistics.mean(r["left_alone_vs_hindsight"] for r in rows),
            "rebalance_sat": mean("rebalance_sat"), "seeds": len(rows),
            "broadcast_median_worst": max(p["broadcasts"]["median"] for p in plugin),
            "broadcast_median": statistics.median(x for p in plugin for x in p["broadcasts"]["per_channel"]),
            "most_in_a_day": max(p["broadcasts"]["most_in_a_day"] for p in plugin),
            "curve_oracle": statistics.mean(r["curve_oracle"] for r in rows) if dense else None,
            "curve_oracle_worst": min(r["curve_oracle"] for r in rows) if dense else None}


def print_family(summary: Dict[Tuple[str, float], Dict[str, Any]]) -> None:
    """One row per world and run length, then the worst seed and the worst world."""
    rows = {k: v for k, v in summary.items() if k[0] != "dense"}
    if not rows:
        return
    print("\n== the family: plugin with sling, net of rebalance fees, against each reference ==")
    print(f"{'world':<11} {'days':>4} {'seeds':>5} {'mean/hind':>9} {'worst/hind':>10} {'@seed':>5} "
          f"{'mean/single':>11} {'mean/std':>8} {'pooled/std':>10} {'alone/hind':>10} {'bc/ch/d':>7} {'max 1 day':>9} "
          f"{'reb paid':>8}")
    for (kind, days), s in rows.items():
        print(f"{kind:<11} {days:4g} {s['seeds']:5d} {fmt_x(s['mean_hindsight'], 3):>9} "
              f"{fmt_x(s['worst_hindsight'], 3):>10} {s['worst_seed']:5d} {fmt_x(s['mean_single'], 3):>11} "
              f"{fmt_x(s['mean_standard'], 3):>8} {fmt_x(s['pooled_standard'], 3):>10} {fmt_x(s['left_alone'], 3):>10} {s['broadcast_median']:7.2f} "
              f"{s['most_in_a_day']:9d} {s['rebalance_sat']:8.0f}")
    print("  (pooled/std: the plugin's net summed over the seeds against the standard rebalancer's; "
          "bc/ch/d: median broadcasts per channel per day over every channel and seed; max 1 day: most "
          "broadcasts of one channel in one day; reb paid: the plugin's rebalance fees per run, sat)")
    (wk, wd), ws = min(rows.items(), key=lambda kv: kv[1]["worst_hindsight"])
    print(f"  worst seed: {wk} seed {ws['worst_seed']} ({wd:g} days) at {fmt_x(ws['worst_hindsight'], 3)} hindsight")
    (mk, md), ms = min(rows.items(), key=lambda kv: kv[1]["mean_hindsight"])
    print(f"  worst world: {mk} ({md:g} days), mean {fmt_x(ms['mean_hindsight'], 3)} hindsight")


def print_goals(summary: Dict[Tuple[str, float], Dict[str, Any]]) -> None:
    print("\ngoals (issue 21; plugin with sling where sling runs; printed, never asserted):")

    def line(text: str, value: str, ok: bool) -> None:
        print(f"  {text:<60} {value:<24} {'reached' if ok else 'MISSED'}")
    for (kind, days), s in summary.items():
        if kind == "dense":
            line("dense: >= 90 % of the oracle (curve, after warm-up)",
                 f"{100 * s['curve_oracle']:.1f}% (worst seed {100 * s['curve_oracle_worst']:.1f}%)",
                 s["curve_oracle"] >= GOALS["dense_oracle"])
            continue
        goals = [(figure, least) for d, figure, least in GOALS_21 if d == days]
        if not goals:
            print(f"  {kind} at {days:g} days: no issue-21 goal (goals are set at 10 and 30 days)")
        for figure, least in goals:
            value = s[figure]
            line(f"{kind}, {days:g} days: " + GOAL_TEXT[figure].format(least), fmt_x(value, 3),
                 not math.isnan(value) and value >= least)
        line(f"{kind}, {days:g} days: median <= 1 broadcast per channel per day",
             f"{s['broadcast_median']:.2f} (worst seed {s['broadcast_median_worst']:.2f})",
             s["broadcast_median"] <= GOALS["broadcasts"])


def dump(market: Market, refs: References, run: PluginRun) -> None:
    """Per channel: demand, best fee, hindsight and oracle fees, what the plugin did."""
    base = refs.base
    print(f"\n-- {market.kind} seed {market.seed}: the market --")
    for line in market.describe():
        print("  " + line)
    hind = static_run(market, [(f, f) for f in base.hindsight_fees_ppm], history_snapshot(market))
    start = history_snapshot(market).earned_msat
    hind_earned = [a - b for a, b in zip(hind.earned_msat, start)]
    print(f"-- {market.kind} seed {market.seed}: per channel (sats; plugin {'with' if run.sling else 'without'} "
          f"sling; fees over time as day:ppm) --")
    print(f"  {'scid':>12} {'hind fee':>8} {'oracle':>9} {'hind earned':>11} {'plugin':>8} {'unmet':>6} "
          f"{'local end':>9} {'bc':>3}  fees")
    for x, c in enumerate(market.channels):
        arrived = run.totals["arrived"][x]
        unmet = (run.totals["failed"][x] + run.totals["no_entry"][x]) / arrived if arrived else 0.0
        o0, o1 = base.oracle_fees_ppm[x]
        oracle = f"{o0}" if o0 == o1 else f"{o0}/{o1}"
        fees = " ".join(f"{t / DAY:.1f}:{f}" for t, f in run.fee_timeline[x])
        print(f"  {c.scid:>12} {base.hindsight_fees_ppm[x]:8d} {oracle:>9} {hind_earned[x] / SAT:11.0f} "
              f"{run.earned_msat[x] / SAT:8.0f} {100 * unmet:5.1f}% {100 * run.final_local_msat[x] / c.capacity_msat:8.0f}% "
              f"{len(run.broadcasts[x]):3d}  {fees}")
    jobs_by = {}
    for j in run.jobs:
        jobs_by.setdefault(j.scid, []).append(j)
    for scid, js in jobs_by.items():
        print(f"  jobs into {scid}: {len(js)}, moved {sum(j.moved_msat for j in js) // 1000 // SAT} k sat for "
              f"{sum(j.fee_msat for j in js) / SAT:.0f} sat, max ppm {sorted({j.max_ppm for j in js})[:6]}")
    for w in run.last_warnings[-5:]:
        print(f"  plugin {w}")


# --- main ----------------------------------------------------------------------------------------------
def parse_sets(items: List[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set wants NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip()
    return out


def parse_days(text: str) -> List[float]:
    return [float(d) for d in text.split(",") if d.strip()]


def build_tasks(args, kinds: List[str], seeds: List[int], days_list: List[float],
                overrides: Dict[str, Any]) -> List[tuple]:
    tasks = []
    for days in days_list:
        for kind in kinds:
            for seed in seeds:
                for what in (BASE, SLING) + (() if args.no_fees_only else (FEES,)):
                    tasks.append((kind, seed, days, what, overrides))
    for seed in range(args.first_seed, args.first_seed + args.dense_seeds):
        for what in (BASE, FEES):
            tasks.append(("dense", seed, args.dense_days, what, overrides))
    if args.dump is not None:
        for kind in kinds:
            for what in (BASE, SLING):
                if (kind, args.dump, days_list[0], what, overrides) not in tasks:
                    tasks.append((kind, args.dump, days_list[0], what, overrides))
    cost = {BASE: 1, FEES: 2, SLING: 3}
    tasks.sort(key=lambda t: -(cost[t[3]] * t[2] * (2 if t[0] == "dense" else 1)))   # longest first
    return tasks


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", "--markets", dest="worlds", default=",".join(WORLDS),
                   help=f"comma list of {', '.join(WORLDS)} (dense: see --dense-seeds); --markets is an alias")
    p.add_argument("--seeds", type=int, default=20, help="seeds per world (1, 2, ...)")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--days", default="10,30", help="run lengths, comma list (e.g. 10,30)")
    p.add_argument("--dense-seeds", type=int, default=5,
                   help="dense seeds (60 days each: 5 by default)")
    p.add_argument("--dense-days", type=float, default=60)
    p.add_argument("--no-fees-only", action="store_true", help="skip the plugin-without-sling runs")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="a plugin option for every run, e.g. demand_half_life_hours=48")
    p.add_argument("--dump", type=int, metavar="SEED", help="per-channel detail of this seed for each world "
                   "(at the first --days)")
    args = p.parse_args(argv)
    overrides = parse_sets(args.set)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: .venv/bin/python bench/bench_economics.py {argv_text}".rstrip())
    began = time.perf_counter()
    kinds = [k.strip() for k in args.worlds.split(",") if k.strip()]
    days_list = parse_days(args.days)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    tasks = build_tasks(args, kinds, seeds, days_list, overrides)
    results: Dict[Tuple, Any] = {}
    cpu: Dict[str, List[float]] = {}
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            for key, result, seconds in pool.imap_unordered(run_task, tasks):
                results[key] = result
                cpu.setdefault(f"{key[0]} {key[3]}", []).append(seconds)
    else:
        for task in tasks:
            key, result, seconds = run_task(task)
            results[key] = result
            cpu.setdefault(f"{key[0]} {key[3]}", []).append(seconds)

    budget_sat = _budget(overrides)
    summary = {}
    runs = [(k, d, seeds) for d in days_list for k in kinds]
    if args.dense_seeds:
        runs.append(("dense", args.dense_days, list(range(args.first_seed, args.first_seed + args.dense_seeds))))
    for kind, days, kseeds in runs:
        rows = []
        for seed in kseeds:
            got = {what: results[(kind, seed, days, what)] for what in (BASE, SLING, FEES)
                   if (kind, seed, days, what) in results}
            rows.append(seed_figures(build_market(kind, seed, days=days), got))
        summary[(kind, days)] = print_market(kind, rows, budget_sat, days)
    print_family(summary)
    print_goals(summary)
    if args.dump is not None:
        for kind in kinds:
            key = (kind, args.dump, days_list[0])
            dump(build_market(kind, args.dump, days=days_list[0]), results[key + (BASE,)], results[key + (SLING,)])
    wall = time.perf_counter() - began
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\nCPU seconds per task (mean; baselines from the cache cost ~0): "
          + ", ".join(f"{k} {statistics.mean(v):.1f}" for k, v in sorted(cpu.items())))
    print(f"wall {wall:.0f} s on {args.jobs} worker processes, CPU {sum(map(sum, cpu.values())):.0f} s; peak RSS: "
          f"bench process {me.ru_maxrss / 1024:.0f} MB, largest worker {kids.ru_maxrss / 1024:.0f} MB")


def _budget(overrides: Dict[str, Any]) -> int:
    from modules.config import build_config
    from simnode.market_run import option_overrides
    return build_config(option_overrides(overrides), ".").daily_budget_sats


if __name__ == "__main__":
    main()
