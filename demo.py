#!/usr/bin/env python3
"""The demo: the real plugin inside the simulated node, on a generated routing history.

    make demo            (or: .venv/bin/python demo.py [--channels 50] [--forwards 100000])

Builds a node with ~50 channels and ~100 000 forwards over 30 days, loads sling with two
orphan jobs from an "earlier run", starts cl-revenue-ops, waits for hydration, then
prints what an operator would see from lightning-cli.
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from pyln.client import LightningRpc  # noqa: E402

from simnode import SimNode  # noqa: E402

PLUGIN = os.path.join(ROOT, "cl-revenue-ops.py")


def build_node(node: SimNode, channels: int, forwards: int, seed: int) -> None:
    node.add_random_channels(channels, seed)
    now = time.time()
    node.generate_history(forwards, start_time=now - 30 * 86400, end_time=now - 60, seed=seed)
    node.funds_onchain_msat = 20_000_000_000
    node.set_plugin_loaded("sling", True)


def show(title: str, result) -> None:
    print(f"\n$ lightning-cli {title}")
    print(json.dumps(result, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--forwards", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

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


if __name__ == "__main__":
    sys.exit(main())
