#!/usr/bin/env python3
"""Fee cycle cost: plugin CPU seconds per fee cycle for N channels on the simulated node.

    .venv/bin/python bench/bench_fee_cycle.py [--channels 500] [--forwards 200000]

The real plugin runs inside the simulated node; each cycle is triggered with
`revenue-adjust-fees` and measured as the plugin process's CPU time (utime + stime from
/proc/<pid>/stat), so the simulator's own work is not counted. Every cycle reads each
channel's evidence (hourly rollups and fee history of the lookback), estimates every
channel's demand posterior with the node's prior, prices, explores and gates. Kinds of
cycle: first sight (the fees found recorded, many set), a cycle a day later (the gossip
budget refilled: many set again), and steady cycles minutes later.
Goal (issue 3): <= 1 s of plugin CPU per cycle for 500 channels.
"""
import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from simnode import SimNode  # noqa: E402

PLUGIN = os.path.join(ROOT, "cl-revenue-ops.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
OPTIONS = {"revenue-ops-flow-interval-seconds": 86400, "revenue-ops-fee-interval-seconds": 86400,
           "revenue-ops-rebalance-interval-seconds": 86400}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def measured(plugin, method):
    cpu0, wall0 = cpu_seconds(plugin.pid), time.perf_counter()
    result = plugin.call(method, timeout=600)
    return result, cpu_seconds(plugin.pid) - cpu0, time.perf_counter() - wall0


def start(node):
    plugin = node.start_plugin(PLUGIN, options=OPTIONS)
    while plugin.call("revenue-status")["phase"] != "running":
        time.sleep(0.1)
    plugin.call("revenue-analyze")
    return plugin


def age_states(db_path: str, hours: float) -> None:
    """As if `hours` had passed since every fee was set (the gossip budget refills)."""
    with sqlite3.connect(db_path) as conn:
        for scid, text in conn.execute("SELECT scid, state_json FROM fee_state").fetchall():
            state = json.loads(text)
            for key in ("fee_since", "last_broadcast_at", "gossip_tokens_at"):
                if state.get(key):
                    state[key] -= hours * 3600
            conn.execute("UPDATE fee_state SET state_json = ? WHERE scid = ?", (json.dumps(state), scid))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=500)
    parser.add_argument("--forwards", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    print(f"fee cycle bench: {args.channels} channels, {args.forwards} forwards over 14 days; "
          f"command: python bench/bench_fee_cycle.py --channels {args.channels} --forwards {args.forwards}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fee-") as base, SimNode(base) as node:
        for i in range(args.channels):
            node.add_channel(capacity_sats=rng.choice([1, 2, 5, 10]) * 1_000_000,
                             local_sats=0, fee_ppm=rng.choice([20, 50, 100, 300, 800]),
                             opener=rng.choice(["local", "remote"]))
        for scid in [c for c in node.state.channels]:
            ch = node.channel(scid)
            node.set_balance(scid, int(ch["capacity_msat"] * rng.uniform(0.02, 0.98)))
        now = time.time()
        node.generate_history(args.forwards, start_time=now - 14 * 86400, end_time=now - 60, seed=2)
        db_path = os.path.join(node.lightning_dir, "revenue_ops.db")

        plugin = start(node)
        result, cpu, wall = measured(plugin, "revenue-adjust-fees")
        rows.append(("first sight", result["cycle"], cpu, wall))
        plugin.shutdown()
        age_states(db_path, 24)
        plugin = start(node)
        for label in ("a day later", "steady (minutes later)", "steady (again)"):
            calls = len(node.calls_of("setchannel"))
            result, cpu, wall = measured(plugin, "revenue-adjust-fees")
            result["cycle"]["setchannel_calls"] = len(node.calls_of("setchannel")) - calls
            rows.append((label, result["cycle"], cpu, wall))
        rss = plugin.rss_peak_kb()
        plugin.shutdown()

    print(f"\n{'cycle':28} {'plugin CPU s':>12} {'wall s':>8} {'changed':>8} {'held':>6} {'gossip-gated':>12}")
    for label, cycle, cpu, wall in rows:
        print(f"{label:28} {cpu:12.3f} {wall:8.3f} {cycle['changed']:8d} {cycle['held']:6d} "
              f"{cycle['skipped_gossip']:12d}")
    worst = max(cpu for _, _, cpu, _ in rows)
    print(f"\nworst plugin CPU per cycle: {worst:.3f} s for {args.channels} channels "
          f"(goal <= 1 s: {'MET' if worst <= 1 else 'NOT MET'}); plugin peak RSS {rss / 1024:.0f} MB")
    print("wall time includes the simulated node answering listpeerchannels and setchannel (Python).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
