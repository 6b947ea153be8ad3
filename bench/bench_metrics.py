#!/usr/bin/env python3
"""What one Prometheus scrape costs (modules/metrics.py) on large forward histories.

Uses the cached databases of bench_aggregation.py (built there through Database.store_forwards
on first use), a Service opened on it as the plugin opens it (no node: a scrape makes no
call), its channels (500, synthetic balances) and a real flow cycle, then times:

  first   the first scrape: it sums the whole history of fees earned per channel (in the
          plugin this runs once, on a thread of its own when hydration ends, not in a scrape);
  warm    every other scrape: the open hours of the rollups, the jobs table, the budget,
          the kept state; rendered to the text format as the HTTP endpoint does;
  next    a scrape an hour later, which closes one hour into the sums (an index range).

    python bench/bench_metrics.py                       # 1 M and 10 M forwards
    python bench/bench_metrics.py --sizes 100000        # smoke run
"""
import argparse
import os
import random
import statistics
import sys
import time
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

from prometheus_client import generate_latest  # noqa: E402

import bench_aggregation as agg  # noqa: E402
from modules.config import default_config  # noqa: E402
from modules.metrics import make_registry  # noqa: E402
from modules.models import Channel  # noqa: E402
from modules.service import RUNNING, Service  # noqa: E402


def channels_of(net: "agg.Network", seed: int):
    rng = random.Random(seed)
    result = []
    for i, scid in enumerate(net.scids):
        capacity = rng.choice((1_000_000, 2_000_000, 5_000_000, 10_000_000)) * 1000
        local = int(capacity * rng.random())
        result.append(Channel(scid, f"02{i:064x}", "CHANNELD_NORMAL", capacity, local, local,
                              capacity - local, 0, rng.randrange(1, 2000), "local", 0, 483, True))
    return result


def run_size(n: int, args, net) -> None:
    days = max(agg.MIN_DAYS, round(n / agg.RATE_PER_DAY, 1))
    params = agg._params(n, args.channels, days, args.seed)
    path = os.path.join(args.out, f"forwards_n{n}_c{args.channels}_d{days:g}_s{args.seed}.db")
    if not agg._cached(path, params):
        print(f"  building {path} (bench_aggregation's database)", flush=True)
        agg.build(path, net, params)
    config = default_config(db_path=path)
    service = Service(config, node=None, log=lambda message, level: None, clock=lambda: agg.T_END)
    service.open()
    service.channels = channels_of(net, args.seed)
    service.flow.analyze(service.channels, agg.T_END)
    service.phase = RUNNING
    registry, collector = make_registry(service)
    began = time.perf_counter()
    text = generate_latest(registry)
    first = time.perf_counter() - began
    warm = []
    for _ in range(args.repeat):
        began = time.perf_counter()
        generate_latest(registry)
        warm.append(time.perf_counter() - began)
    service.clock = lambda: agg.T_END + 3600
    began = time.perf_counter()
    generate_latest(registry)
    next_hour = time.perf_counter() - began
    assert collector.last_problem is None, collector.last_problem
    lines = text.count(b"\n")
    rows = service.db.forwards_count()
    hourly = service.db._conn().execute("SELECT COUNT(*) FROM flow_hourly").fetchone()[0]
    service.db.close()
    print(f"{n:>12,} forwards ({hourly:,} hourly rollup rows), {args.channels} channels: first scrape "
          f"{first * 1000:,.0f} ms, warm scrape median {statistics.median(warm) * 1000:,.1f} ms "
          f"(max {max(warm) * 1000:,.1f} ms, {args.repeat} scrapes), an hour later {next_hour * 1000:,.0f} ms; "
          f"{len(text):,} bytes, "
          f"{lines:,} lines; forwards stored {rows:,}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000000,10000000", help="forward counts, comma separated")
    p.add_argument("--channels", type=int, default=500)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "out"), help="cache directory")
    p.add_argument("--repeat", type=int, default=20, help="warm scrapes timed")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print(f"bench_metrics: {os.cpu_count()} CPUs, load average {agg._load()}")
    net = agg.Network(args.channels, args.seed)
    for n in (int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()):
        run_size(n, args, net)
    return 0


if __name__ == "__main__":
    sys.exit(main())
