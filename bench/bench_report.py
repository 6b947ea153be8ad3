#!/usr/bin/env python3
"""revenue-report's reads on a large history: the daily rollups against the hourly ones.

Builds a fresh database of N forwards (settled, and 10 % refused for lack of balance)
among CHANNELS channels over DAYS days through Database.store_forwards, in pages of
10 000 in time order as hydration stores them, then measures, with the plugin's own code:

  * store: CPU per page (the insert path the daily rollups must not slow down: they add
    one small statement per page, the days are rolled later);
  * roll: Database.roll_days once every day has closed (what the first flow cycle after a
    hydration does), a few days per transaction; then again with nothing to do;
  * read: Database.report_flow for the whole history, 30 and 7 days (best of 5), beside
    the same lifetime sums from the hourly rollups alone (get_flow_aggregation(0));
  * report: modules.report.build_report on those rows for every channel;
  * exact: the lifetime rows equal the sums of the forwards themselves.

    python bench/bench_report.py                       # 1 M forwards, 500 channels, 180 days
    python bench/bench_report.py --sizes 100000        # smoke run
"""
import argparse
import os
import random
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from modules.database import ROLL_DAYS_PER_TRANSACTION, Database  # noqa: E402
from modules.models import Channel, Forward  # noqa: E402
from modules.report import build_report  # noqa: E402

DAY = 86400
NOW = 1_767_225_600 + 2434        # 2026-01-01T00:40:34Z: the history ends just before
PAGE = 10_000


def pages(n: int, channels: List[str], days: float, seed: int) -> Iterator[List[Forward]]:
    """n forwards in time order, PAGE at a time; amounts log-normal around 50 000 sat."""
    rng = random.Random(seed)
    start = NOW - days * DAY
    step = days * DAY / n
    page: List[Forward] = []
    for i in range(n):
        a, b = rng.sample(channels, 2)
        t = start + i * step
        out = int(rng.lognormvariate(17.7, 1.2))
        if rng.random() < 0.1:
            page.append(Forward(a, i, b, out, 0, 0, "local_failed", t, None, i + 1, None, 4103))
        else:
            fee = out * rng.choice((10, 50, 100, 500)) // 1_000_000
            page.append(Forward(a, i, b, out + fee, out, fee, "settled", t - 1, t, i + 1, i + 1))
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(n: int, args) -> None:
    scids = [f"{800000 + i}x1x0" for i in range(args.channels)]
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(os.path.join(tmp, "report.db"))
        db.migrate()
        cpu = time.process_time()
        wall = time.perf_counter()
        for page in pages(n, scids, args.days, args.seed):
            db.store_forwards(page)
        store_cpu, store_wall = time.process_time() - cpu, time.perf_counter() - wall
        conn = db._conn()
        hourly = conn.execute("SELECT COUNT(*) FROM flow_hourly").fetchone()[0]
        print(f"== {n:,} forwards, {args.channels} channels, {args.days:g} days: {hourly:,} hourly rows")
        print(f"  store   {store_cpu:.1f} s CPU ({n / store_cpu:,.0f} forwards per CPU second), {store_wall:.1f} s wall")

        wall = time.perf_counter()
        rolled = db.roll_days(NOW)
        roll_wall = time.perf_counter() - wall
        daily = conn.execute("SELECT COUNT(*) FROM flow_daily").fetchone()[0]
        transactions = -(-rolled // ROLL_DAYS_PER_TRANSACTION)
        print(f"  roll    {rolled} days into {daily:,} daily rows in {roll_wall:.2f} s, {transactions}"
              f" transactions (~{roll_wall / max(1, transactions):.2f} s of write lock each);"
              f" again with nothing to do: {best_of(lambda: db.roll_days(NOW)) * 1000:.2f} ms")

        lifetime = db.report_flow(None)
        for label, since in (("whole history", None), ("30 days", NOW - 30 * DAY), ("7 days", NOW - 7 * DAY)):
            print(f"  read    {label:14} report_flow {best_of(lambda: db.report_flow(since)) * 1000:8.1f} ms")
        hourly_ms = best_of(lambda: db.get_flow_aggregation(0), 3) * 1000
        print(f"          whole history from the hourly rollups alone: {hourly_ms:8.1f} ms")

        channels = [Channel(s, "02" + f"{i:064x}", "CHANNELD_NORMAL", 10**10, 5 * 10**9, 5 * 10**9, 5 * 10**9,
                            0, 100, "local", 0, 483, True) for i, s in enumerate(scids)]
        spend = db.rebalance_spend_since(None)
        build_ms = best_of(lambda: build_report(lifetime, spend, channels, 0, NOW)) * 1000
        print(f"  report  build_report for {len(channels)} channels: {build_ms:.1f} ms")

        out = dict(conn.execute("SELECT out_channel, SUM(fee_msat) FROM forwards GROUP BY out_channel"))
        unmet = dict(conn.execute("SELECT out_channel, SUM(in_msat) FROM failed_forwards GROUP BY out_channel"))
        exact = all(lifetime[s].fees_earned_msat == out.get(s, 0) and lifetime[s].unmet_msat == unmet.get(s, 0)
                    for s in lifetime) and set(lifetime) == set(out) | set(unmet)
        print(f"  exact   lifetime fees and unmet demand equal the forwards' own sums: {exact}")
        db.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000000", help="forward counts, comma separated")
    p.add_argument("--channels", type=int, default=500)
    p.add_argument("--days", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"revenue-report bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average"
          f" {load:.1f} (other work on the machine inflates wall times)")
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
