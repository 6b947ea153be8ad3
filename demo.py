#!/usr/bin/env python3
"""The demo: the real plugin inside the simulated node, then a simulated week of it on a market.

    make demo            (or: .venv/bin/python demo.py [--channels 50] [--forwards 100000])

Part 1: builds a node with ~50 channels and ~100 000 forwards over 30 days, loads sling
with two orphan jobs from an "earlier run", starts cl-revenue-ops, waits for hydration,
then prints what an operator would see from lightning-cli.

Part 2 (the week): the real plugin, in-process on a simulated node, runs 7 days of
simulated time (a minute or so of wall time) on a price-elastic market whose channels
drain (simnode/market.py), with sling; the same market with the fees left as they were
(no rebalancing) runs on the same arrivals. Prints a per-channel table and writes a PNG:
revenue over time (plugin net of rebalance fees vs left alone) and each channel's fee.

    .venv/bin/python demo.py --skip-week          # part 1 only
    .venv/bin/python demo.py --week-only --market low --market-seed 2 --plot /tmp/week.png
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from pyln.client import LightningRpc  # noqa: E402

from simnode import SimNode  # noqa: E402
from simnode.market import DAY, SAT, Market, build_market  # noqa: E402
from simnode.market_week import Week, simulated_week  # noqa: E402

PLUGIN = os.path.join(ROOT, "cl-revenue-ops.py")
# The week's default market: "high" (start fee 100 ppm, below most channels' best fee),
# seed 3: of seeds 1-8 its plugin / left-alone ratio is the median one (README, "The demo").
WEEK_MARKET, WEEK_SEED, WEEK_DAYS = "high", 3, 7.0
WEEK_PLOT = os.path.join(ROOT, "demo-week.png")


def build_node(node: SimNode, channels: int, forwards: int, seed: int) -> None:
    node.add_random_channels(channels, seed)
    now = time.time()
    node.generate_history(forwards, start_time=now - 30 * 86400, end_time=now - 60, seed=seed)
    node.funds_onchain_msat = 20_000_000_000
    node.set_plugin_loaded("sling", True)


def show(title: str, result) -> None:
    print(f"\n$ lightning-cli {title}")
    print(json.dumps(result, indent=2))


def first_part(args) -> int:
    with tempfile.TemporaryDirectory(prefix="revenue-ops-demo-") as base, SimNode(base) as node:
        print(f"Simulated node: {args.channels} channels, {args.forwards} forwards over 30 days")
        build_node(node, args.channels, args.forwards, args.seed)
        rpc = LightningRpc(os.path.join(node.lightning_dir, "lightning-rpc"))
        scids = [c["short_channel_id"] for c in rpc.listpeerchannels()["channels"]][:2]
        for scid in scids:  # jobs an earlier run left behind
            rpc.call("sling-job", {"scid": scid, "direction": "pull", "amount": 100000,
                                        "maxppm": 200, "outppm": 0})
        began = time.time()
        plugin = node.start_plugin(PLUGIN, options={"revenue-ops-dry-run": False})
        if plugin.disabled:
            print(f"plugin refused to start: {plugin.disabled}")
            return 1
        while plugin.call("revenue-status")["phase"] != "running":
            if time.time() - began > 300:
                print("hydration did not finish in 300 s")
                return 1
            time.sleep(0.2)
        print(f"Plugin running after {time.time() - began:.1f} s (hydration included)")
        for line in (m for _, m in plugin.logs if m.startswith(("Startup Hygiene", "Hydration"))):
            print("  log:", line)
        analysis = plugin.call("revenue-analyze")
        analysis["channels"] = analysis["channels"][:5]
        show("revenue-analyze   (top 5 channels by volume)", analysis)
        fees = plugin.call("revenue-adjust-fees")
        show("revenue-adjust-fees   (a first cycle observes each fee before judging it; 3 shown)",
             {"cycle": fees["cycle"], "decisions": fees["decisions"][:3]})
        top = analysis["channels"][0]["short_channel_id"]
        show(f"revenue-fees {top}", plugin.call("revenue-fees", {"scid": top}))
        rebalance = plugin.call("revenue-rebalance")
        destinations = [d for d in rebalance["decisions"] if d["role"] == "destination"]
        show("revenue-rebalance   (started jobs, and the first 3 destinations with their reasons)",
             {"started": rebalance["started"], "ended": rebalance["ended"],
              "destinations": [{k: d[k] for k in ("short_channel_id", "start", "reasons", "amount_msat",
                                                   "max_ppm", "expected_profit_msat")}
                               for d in destinations[:3]]})
        for _ in range(5):
            node.sling.step()   # the simulated sling moves liquidity for the jobs started
        status = plugin.call("revenue-status")
        show("revenue-status", status)
        plugin.shutdown()
    return 0


# --- part 2: the simulated week ----------------------------------------------------------------
def sats(msat: float) -> str:
    return f"{msat / SAT:,.0f}"


def days_text(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


def week_table(week: Week) -> List[str]:
    """Per channel and in total: the plugin's fee at the start and the end, its broadcasts
    per day, what it earned, paid for rebalancing into the channel and kept, and what left
    alone earned (sats)."""
    days = week.days
    cols = "{:<13} {:<8} {:^16} {:>10} | {:>8} {:>9} {:>8} | {:>10}"
    head = ["{:<13} {:<8} {:^16} {:>10} | {:^27} | {:>10}".format(
                "", "", "plugin's fee ppm", "broadcasts", "plugin, with sling", "left alone"),
            cols.format("channel", "role", "start -> end", "per day", "earned", "rebalance", "net", "earned")]
    rule = "-" * len(head[1])
    lines = head + [rule]
    for c in week.channels:
        lines.append(cols.format(c.scid, c.role, f"{c.start_fee_ppm:>6} -> {c.end_fee_ppm:<6}",
                                 f"{c.broadcasts / days:.2f}", sats(c.plugin_earned_msat),
                                 sats(c.rebalance_fee_msat), sats(c.plugin_net_msat), sats(c.alone_earned_msat)))
    run = week.plugin
    unattributed = run.rebalance_fee_msat - sum(c.rebalance_fee_msat for c in week.channels)
    if unattributed:
        lines.append(cols.format("(sling payments of no job)", "", "", "", "", sats(unattributed), "", ""))
    median_per_day = statistics.median(c.broadcasts / days for c in week.channels)
    lines.append(rule)
    lines.append(cols.format("total", "", "(median)", f"{median_per_day:.2f}", sats(sum(run.earned_msat)),
                             sats(run.rebalance_fee_msat), sats(run.net_msat), sats(week.alone_earned_msat))
                 + f"   plugin net = {week.ratio:.2f}x left alone")
    return lines


def plot_week(week: Week, path: str) -> None:
    """Two panels: cumulative revenue (plugin net of rebalance fees, left alone), and the
    plugin's fee per channel over time (steps, log scale)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure   # no pyplot: no display, no global backend state
    from matplotlib.ticker import NullFormatter, ScalarFormatter, StrMethodFormatter

    m, run = week.market, week.plugin
    fig = Figure(figsize=(11, 8.5), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.3))
    days = lambda series: [t / DAY for t, _ in series]   # noqa: E731
    net, gross, alone = run.net_series(), run.earnings, week.alone_series()
    top.plot(days(net), [v / SAT for _, v in net], color="tab:blue", lw=2,
             label="plugin: fees earned less rebalance fees")
    top.plot(days(gross), [v / SAT for _, v in gross], color="tab:blue", lw=1, ls=":",
             label="plugin: fees earned")
    top.plot(days(alone), [v / SAT for _, v in alone], color="tab:gray", lw=2,
             label="left alone: start fees, no rebalancing")
    top.set_ylabel("cumulative revenue (sats)")
    top.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    top.set_title(f'{days_text(m.days)} simulated, market "{m.kind}" seed {m.seed} ({len(m.channels)} draining '
                  f"channels): plugin net {week.ratio:.2f}x left alone")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    palette = colormaps["tab20"].colors
    palette = palette[0::2] + palette[1::2]      # the ten strong colours first
    for x, c in enumerate(m.channels):
        timeline = run.fee_timeline[x]
        xs = [t / DAY for t, _ in timeline] + [m.days]
        ys = [f for _, f in timeline] + [timeline[-1][1]]
        bottom.step(xs, ys, where="post", color=palette[x % len(palette)], lw=1.4, label=f"{c.scid} {c.role}")
    for fee in sorted({c.start_fee_ppm for c in m.channels}):
        bottom.axhline(fee, color="tab:gray", lw=2, ls="--")
    bottom.plot([], [], color="tab:gray", lw=2, ls="--", label="left alone (start fee)")
    bottom.set_yscale("log")
    low, high = bottom.get_ylim()
    bottom.set_yticks([f for f in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if low <= f <= high])
    bottom.yaxis.set_major_formatter(ScalarFormatter())
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_ylabel("fee (ppm, log scale)")
    bottom.set_xlabel("day")
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    if m.shift_s is not None:
        for ax in (top, bottom):
            ax.axvline(m.shift_s / DAY, color="tab:red", lw=1, alpha=0.5)
        top.annotate("demand shifts on some channels", (m.shift_s / DAY, 0), xycoords=("data", "axes fraction"),
                     xytext=(4, 6), textcoords="offset points", color="tab:red", fontsize="small")
    bottom.set_xlim(0, m.days)
    fig.savefig(path)


def show_week(market: Market, plot_path: Optional[str]) -> Week:
    """Runs the week on `market`, prints its table and summary, writes the plot if asked."""
    began = time.perf_counter()
    print(f"\n== A simulated week: market \"{market.kind}\" seed {market.seed}, {len(market.channels)} channels "
          f"that drain, {days_text(market.days)} after {days_text(market.history_s / DAY)} of history at the "
          f"start fee ==")
    print("The plugin (with sling) and the same market left alone (start fees, no rebalancing), on the same "
          "arrivals; simulated time...")
    week = simulated_week(market)
    run = week.plugin
    print(f"done in {time.perf_counter() - began:.0f} s of wall time; sats, over the {days_text(market.days)}:\n")
    for line in week_table(week):
        print(line)
    moved = sum(j.moved_msat for j in run.jobs)
    per_day = [c.broadcasts / week.days for c in week.channels]
    print(f"\nplugin: {len(run.jobs)} sling jobs, {sum(1 for j in run.jobs if j.moved_msat)} moved {sats(moved)} "
          f"sats for {sats(run.rebalance_fee_msat)} sats of fees, at most {sats(week.most_paid_in_24h_msat())} "
          f"in any 24 h (budget {week.daily_budget_sats:,} a day); fee broadcasts per channel per day: "
          f"median {statistics.median(per_day):.2f}, busiest channel {max(per_day):.2f}, most of one channel in "
          f"one day {week.most_broadcasts_in_a_day()}; plugin loop errors {sum(run.loop_errors.values())}")
    if plot_path:
        plot_week(week, plot_path)
        print(f"plot: {plot_path}")
    return week


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--channels", type=int, default=50, help="part 1: the node's channels")
    parser.add_argument("--forwards", type=int, default=100_000, help="part 1: forwards in its history")
    parser.add_argument("--seed", type=int, default=1, help="part 1: the node's seed")
    parser.add_argument("--skip-week", action="store_true", help="part 1 only")
    parser.add_argument("--week-only", action="store_true", help="the simulated week only")
    parser.add_argument("--market", default=WEEK_MARKET, choices=("high", "low"),
                        help="the week's market (simnode/market.py)")
    parser.add_argument("--market-seed", type=int, default=WEEK_SEED, help="the week's market seed")
    parser.add_argument("--days", type=float, default=WEEK_DAYS, help="simulated days of the week part")
    parser.add_argument("--plot", default=WEEK_PLOT, help="the week's PNG ('' for none)")
    args = parser.parse_args(argv)
    if args.skip_week and args.week_only:
        parser.error("--skip-week and --week-only exclude each other")
    if args.days <= 0:
        parser.error("--days must be positive")
    if not args.week_only:
        status = first_part(args)
        if status or args.skip_week:
            return status
    show_week(build_market(args.market, args.market_seed, days=args.days), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
