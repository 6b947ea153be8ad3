#!/usr/bin/env python3
"""Hydration of the forwarding history through the real plugin, on the simulated node.

For each history size (default 10 000 and 1 000 000 forwards among 500 channels over
180 days) a fresh simulated node (simnode) gets the generated history, then the real
plugin (cl-revenue-ops.py, a child process) starts on a fresh database and pages
`listforwards` (modules/hydration.py) until `revenue-status` says phase "running".
Reported per run:

  * hydration seconds (revenue-status database.hydration.seconds) and the wall time
    from starting the plugin to phase "running";
  * forwards/s = settled forwards stored / hydration seconds (rows read/s beside it:
    the plugin pages every forward, failed ones too, and keeps the settled ones);
  * plugin peak RSS (VmHWM): at the end of hydration and just before shutdown (after
    the first flow cycle, which starts when the plugin is running);
  * rows stored, pages, database file size.

Then, in the same run:
  * the ratios 10 k vs 1 M of forwards/s and of peak RSS (goal <= 1.2x);
  * where the 1 M hydration time goes: the simulator's serving (CPU of the bench
    process, which hosts the simulator, split into SQL+render, json.dumps and sendall
    by timing the simulator's request handler with per-thread CPU clocks) vs the plugin
    process (utime+stime from /proc/<pid>/stat) -- the simulator is pure Python and
    much slower than lightningd, and the plugin waits on it while a page is built;
  * an unpaged `listforwards {"status": "settled"}` on the 1 M history, as a plugin
    without pagination would do it: a child Python process with
    pyln.client.LightningRpc(...).call() that parses every row with parse_forward;
    its seconds and peak RSS (ru_maxrss of the child). pyln's reader is quadratic in
    the size of one answer, so on 1 M this takes about 5 minutes: by default the child
    stops itself after 150 s and reports what it had (lower bounds; --unpaged-limit 0
    lets it finish);
  * optionally (--page-sizes) the 1 M hydration with pages of 1000 / 10000 / 50000;
  * optionally (--profile) a cProfile of the plugin side of the 1 M hydration
    (ForwardSync against the same node socket, in a child process).

Goals are printed beside the figures, never asserted: >= 50 000 forwards/s, plugin
peak RSS <= 100 MB, <= 1.2x between 10 k and 1 M.

    python bench/bench_hydration.py                      # 10 k and 1 M
    python bench/bench_hydration.py --sizes 10000        # smoke run
    python bench/bench_hydration.py --page-sizes         # + 1000/10000/50000 on 1 M
    python bench/bench_hydration.py --profile            # + cProfile of the plugin side
    python bench/bench_hydration.py --unpaged-limit 0    # let the unpaged call finish
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from simnode import SimNode  # noqa: E402

PLUGIN = os.path.join(ROOT, "cl-revenue-ops.py")
DAY = 86400
GOAL_FWD_PER_S = 50_000
GOAL_RSS_MB = 100.0
GOAL_RATIO = 1.2
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZES = (1000, 10000, 50000)


# --- measuring -------------------------------------------------------------------------
def proc_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_schedstat(pid: int) -> Optional[tuple]:
    """(CPU seconds, run-queue wait seconds) summed over the live threads of a process:
    the wait is time spent runnable but without a CPU (other load on the machine)."""
    cpu = wait = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    fields = fh.read().split()
            except OSError:
                continue
            cpu += int(fields[0])
            wait += int(fields[1])
    except OSError:
        return None
    return cpu / 1e9, wait / 1e9


def thread_wait_seconds() -> float:
    """Run-queue wait of the calling thread so far (0 without schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def self_status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class SimMeter:
    """Times the simulator's answers to listforwards, inside the bench process.

    ForwardStore.listforwards (SQL + render to dicts) is wrapped; RpcServer._answer is
    replaced by the same three steps (dispatch, json.dumps, sendall) with a per-thread
    CPU clock (time.thread_time) and a wall clock around each. Other methods are only
    counted. Nothing in simnode/ is changed on disk."""

    def __init__(self, node: SimNode):
        self.lock = threading.Lock()
        self.reset()
        from simnode import rpc_server
        store, server = node.forwards, node.server
        original_list = store.listforwards

        def listforwards(*args, **kwargs):
            c0, w0 = time.thread_time(), time.perf_counter()
            rows = original_list(*args, **kwargs)
            self._add("query_render_cpu", time.thread_time() - c0,
                      "query_render_wall", time.perf_counter() - w0)
            with self.lock:
                self.t["rows"] += len(rows)
            return rows

        def answer(conn, req):
            if not isinstance(req, dict) or "id" not in req:
                return
            method = str(req.get("method"))
            q0, c0, w0 = thread_wait_seconds(), time.thread_time(), time.perf_counter()
            resp = rpc_server.dispatch(node, method, req.get("params"), req["id"])
            resp = dict({"jsonrpc": "2.0", "id": req["id"]}, **resp)
            c1, w1 = time.thread_time(), time.perf_counter()
            data = json.dumps(resp).encode("utf-8") + b"\n\n"
            q2, c2, w2 = thread_wait_seconds(), time.thread_time(), time.perf_counter()
            try:
                conn.sendall(data)
            finally:  # (a client that goes away mid-answer raises here; count it anyway)
                c3, w3 = time.thread_time(), time.perf_counter()
                if method == "listforwards":
                    self._add("dispatch_cpu", c1 - c0, "dispatch_wall", w1 - w0,
                              "dumps_cpu", c2 - c1, "dumps_wall", w2 - w1,
                              "build_runq_wait", q2 - q0,
                              "send_cpu", c3 - c2, "send_wall", w3 - w2,
                              "calls", 1, "bytes", len(data))
                else:
                    self._add("other_calls", 1, "other_cpu", c3 - c0)

        store.listforwards = listforwards
        server._answer = answer

    def _add(self, *pairs):
        with self.lock:
            for key, value in zip(pairs[::2], pairs[1::2]):
                self.t[key] += value

    def reset(self) -> None:
        with self.lock:
            self.t = dict.fromkeys(
                ("query_render_cpu", "query_render_wall", "dispatch_cpu", "dispatch_wall",
                 "dumps_cpu", "dumps_wall", "build_runq_wait", "send_cpu", "send_wall", "calls",
                 "bytes", "rows", "other_calls", "other_cpu"), 0)

    def snapshot(self) -> Dict[str, float]:
        with self.lock:
            return dict(self.t)


# --- the node ------------------------------------------------------------------------
def build_node(node: SimNode, channels: int, forwards: int, days: float, seed: int) -> Dict[str, Any]:
    node.add_random_channels(channels, seed)
    end = time.time() - 60
    began = time.perf_counter()
    node.generate_history(forwards, start_time=end - days * DAY, end_time=end, seed=seed)
    seconds = time.perf_counter() - began
    settled = node.forwards.db.execute("SELECT COUNT(*) FROM forwards WHERE status = 1").fetchone()[0]
    return {"forwards": forwards, "settled": settled, "generate_seconds": seconds}


# --- one hydration through the plugin --------------------------------------------------
def hydrate(node: SimNode, meter: SimMeter, workdir: str, page_size: int, label: str,
            timeout: float) -> Dict[str, Any]:
    db_path = os.path.join(workdir, f"revenue_ops-{label}-p{page_size}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.unlink(db_path + suffix)
    options = {"revenue-ops-db-path": db_path, "revenue-ops-hydration-page-size": page_size,
               "revenue-ops-dry-run": True}
    wall0 = time.perf_counter()
    plugin = node.start_plugin(PLUGIN, options=options)
    try:
        if plugin.disabled:
            raise RuntimeError(f"plugin refused to start: {plugin.disabled}")
        plugin.wait_for_log(r"^Hydration: reading", timeout=60)
        # The window of the hydration itself: from "reading" to "stored".
        sim0, plug0, meter0 = self_cpu_seconds(), proc_cpu_seconds(plugin.pid), time.perf_counter()
        sched0 = proc_schedstat(plugin.pid)
        meter.reset()
        plugin.wait_for_log(r"^Hydration: stored|^Start-up incomplete", timeout=timeout)
        plug1, sim1, hyd_wall = proc_cpu_seconds(plugin.pid), self_cpu_seconds(), time.perf_counter()
        sched1 = proc_schedstat(plugin.pid)
        served = meter.snapshot()
        rss_hydration = plugin.rss_peak_kb()
        while True:
            status = plugin.call("revenue-status")
            if status["phase"] == "running":
                break
            if time.perf_counter() - wall0 > timeout:
                raise TimeoutError(f"{label}: not running after {timeout:g} s")
            time.sleep(0.01)
        wall_running = time.perf_counter() - wall0
        if status.get("startup_error"):
            raise RuntimeError(f"{label}: start-up error: {status['startup_error']}")
        # The first flow cycle starts with phase "running"; let it finish so the peak
        # read before shutdown is the plugin's whole start-up, then read it.
        flow_deadline = time.perf_counter() + 120
        while plugin.call("revenue-status")["loops"]["flow"]["runs"] < 1:
            if time.perf_counter() > flow_deadline:
                break
            time.sleep(0.05)
        rss_final = plugin.rss_peak_kb()
        cpu_final = proc_cpu_seconds(plugin.pid)
        status = plugin.call("revenue-status")
    finally:
        plugin.shutdown()
    db = status["database"]
    hyd = db["hydration"] or {}
    seconds = hyd.get("seconds") or 0.0
    return {
        "label": label, "page_size": page_size,
        "hydration_seconds": seconds, "wall_to_running": wall_running,
        "rows_added": hyd.get("rows_added"), "pages": hyd.get("pages"),
        "paginated": hyd.get("paginated"), "forwards_rows": db["forwards_rows"],
        "file_size_bytes": db["file_size_bytes"],
        "fwd_per_s": (hyd.get("rows_added") or 0) / seconds if seconds else float("nan"),
        "rows_read": served["rows"],
        "rss_hydration_kb": rss_hydration, "rss_final_kb": rss_final,
        "plugin_cpu_hydration": plug1 - plug0, "plugin_cpu_total": cpu_final,
        "sim_cpu_hydration": sim1 - sim0, "window_wall": hyd_wall - meter0,
        "plugin_runq_wait": (sched1[1] - sched0[1]) if sched0 and sched1 else None,
        "served": served,
    }


# --- the unpaged call, as a plugin without pagination made it ----------------------------
UNPAGED_CHILD = r"""
import json, os, resource, sys, threading, time
sys.path.insert(0, sys.argv[2])
from pyln.client import LightningRpc
from modules.node import parse_forward

def status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])

def received():
    # Bytes pyln's reader holds so far: its `buff` local, seen from this thread.
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        if frame.f_code.co_name == "_readobj":
            return len(frame.f_locals.get("buff", b""))
        frame = frame.f_back
    return None

def report(**extra):
    ru = resource.getrusage(resource.RUSAGE_SELF)
    extra.update({"rss_before_kb": rss_before, "maxrss_kb": ru.ru_maxrss,
                  "received_bytes": received(),
                  "cpu_seconds": ru.ru_utime + ru.ru_stime})
    sys.stdout.write(json.dumps(extra) + "\n")
    sys.stdout.flush()

def watchdog(limit):
    time.sleep(limit)
    report(finished=False, seconds=time.perf_counter() - t0)
    os._exit(0)

rss_before = status_kb("VmRSS")
limit = float(sys.argv[3])
rpc = LightningRpc(sys.argv[1])
t0 = time.perf_counter()
if limit > 0:
    threading.Thread(target=watchdog, args=(limit,), daemon=True).start()
result = rpc.call("listforwards", {"status": "settled"})
t1 = time.perf_counter()
forwards = [parse_forward(row) for row in result["forwards"]]
settled = sum(1 for f in forwards if f.is_settled)
t2 = time.perf_counter()
report(finished=True, rows=len(result["forwards"]), settled=settled, call_seconds=t1 - t0,
       parse_seconds=t2 - t1, seconds=t2 - t0)
os._exit(0)  # (skip freeing a million objects)
"""


def unpaged(node: SimNode, meter: SimMeter, limit: float) -> Dict[str, Any]:
    """The child stops itself after `limit` seconds (0: no limit) and reports what it has."""
    meter.reset()
    hwm0 = self_status_kb("VmHWM")
    sim0, wall0 = self_cpu_seconds(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", UNPAGED_CHILD, node.rpc_path, ROOT, str(limit)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - wall0
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"unpaged child failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    time.sleep(0.5)  # let the simulator's sendall notice a child that left early
    result.update({"wall": wall, "sim_cpu": self_cpu_seconds() - sim0, "served": meter.snapshot(),
                   "bench_hwm_before_kb": hwm0, "bench_hwm_after_kb": self_status_kb("VmHWM")})
    return result


# --- a cProfile of the plugin side of hydration ---------------------------------------
PROFILE_CHILD = r"""
import cProfile, io, pstats, sys
sys.path.insert(0, sys.argv[2])
from modules.database import Database
from modules.hydration import ForwardSync
from modules.node import NodeAdapter
db = Database(sys.argv[3]); db.migrate()
sync = ForwardSync(NodeAdapter(sys.argv[1]), db, int(sys.argv[4]))
prof = cProfile.Profile()
prof.enable()
result = sync.catch_up()
prof.disable()
print("ForwardSync.catch_up under cProfile:", result.to_dict())
out = io.StringIO()
stats = pstats.Stats(prof, stream=out)
stats.sort_stats("tottime").print_stats(int(sys.argv[5]))
print(out.getvalue())
"""


def profile_plugin_side(node: SimNode, workdir: str, page_size: int, top: int, timeout: float) -> str:
    db_path = os.path.join(workdir, f"profile-p{page_size}.db")
    proc = subprocess.run([sys.executable, "-c", PROFILE_CHILD, node.rpc_path, ROOT, db_path,
                           str(page_size), str(top)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"profile child failed:\n{proc.stderr}")
    lines = [line.replace(ROOT + "/", "") for line in proc.stdout.splitlines()]
    # Keep the header and the table; drop pstats' blank preamble lines.
    return "\n".join(line for line in lines if line.strip())


# --- printing ----------------------------------------------------------------------------
def mb(kb: Optional[float]) -> float:
    return float("nan") if kb is None else kb / 1024


def mark(ok: bool) -> str:
    return "meets goal" if ok else "MISSES goal"


def print_run(r: Dict[str, Any]) -> None:
    print(f"  page size {r['page_size']}: hydration {r['hydration_seconds']:.2f} s "
          f"(status), wall start->running {r['wall_to_running']:.2f} s")
    print(f"    stored {r['rows_added']} settled forwards (forwards_rows {r['forwards_rows']}), "
          f"read {r['rows_read']} rows in {r['pages']} pages, "
          f"db {r['file_size_bytes'] / 1e6:.1f} MB")
    rows_read_s = r["rows_read"] / r["hydration_seconds"] if r["hydration_seconds"] else 0
    print(f"    {r['fwd_per_s']:,.0f} forwards/s stored   [goal >= {GOAL_FWD_PER_S:,}: "
          f"{mark(r['fwd_per_s'] >= GOAL_FWD_PER_S)}]   ({rows_read_s:,.0f} rows/s read)")
    print(f"    plugin peak RSS {mb(r['rss_final_kb']):.1f} MB before shutdown "
          f"(after the first flow cycle), {mb(r['rss_hydration_kb']):.1f} MB at end of hydration"
          f"   [goal <= {GOAL_RSS_MB:.0f} MB: {mark(mb(r['rss_final_kb']) <= GOAL_RSS_MB)}]")


def print_split(r: Dict[str, Any]) -> None:
    s = r["served"]
    wall = r["window_wall"]
    serve_cpu = s["dispatch_cpu"] + s["dumps_cpu"] + s["send_cpu"]
    build = s["dispatch_wall"] + s["dumps_wall"]
    plugin = r["plugin_cpu_hydration"]
    other = r["sim_cpu_hydration"] - serve_cpu
    print(f"  where the {r['label']} hydration time goes (page size {r['page_size']}, "
          f"window 'Hydration: reading' -> 'stored' = {wall:.2f} s wall):")
    print(f"    simulator (bench process), {s['calls']} listforwards answers, "
          f"{s['rows']} rows, {s['bytes'] / 1e6:.0f} MB of JSON:")
    print(f"      SQL + render to dicts  {s['query_render_cpu']:7.2f} s CPU  "
          f"({s['query_render_wall']:.2f} s wall)")
    print(f"      dispatch total         {s['dispatch_cpu']:7.2f} s CPU  "
          f"({s['dispatch_wall']:.2f} s wall; SQL + render included)")
    print(f"      json.dumps + encode    {s['dumps_cpu']:7.2f} s CPU  ({s['dumps_wall']:.2f} s wall)")
    print(f"      sendall                {s['send_cpu']:7.2f} s CPU  ({s['send_wall']:.2f} s wall, "
          f"overlaps the plugin's reading)")
    print(f"      serving total          {serve_cpu:7.2f} s CPU = {100 * serve_cpu / wall:.0f}% "
          f"of the window; the plugin waits ~{build:.2f} s while pages are built")
    print(f"      rest of bench process  {other:7.2f} s CPU (other RPC {s['other_calls']} calls "
          f"{s['other_cpu']:.2f} s, plugin log reader, status polls)")
    print(f"    plugin process           {plugin:7.2f} s CPU = {100 * plugin / wall:.0f}% of the "
          f"window (read + JSON decode, parse_forward, SQLite inserts and rollups)")
    idle = wall - build - plugin
    print(f"    neither (wall - page building - plugin CPU) {idle:7.2f} s: the plugin waiting on the "
          f"disk (WAL commits and checkpoints), on the transfer, or for a CPU")
    if r.get("plugin_runq_wait") is not None:
        print(f"    waiting for a CPU (run queue, /proc schedstat): plugin {r['plugin_runq_wait']:.2f} s, "
              f"simulator while building pages {s['build_runq_wait']:.2f} s "
              f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if plugin > 0:
        print(f"    => the plugin alone: {r['rows_added'] / plugin:,.0f} forwards stored per "
              f"plugin CPU second -- the rate were pages free to build (lightningd, in C, builds "
              f"them far faster than this Python simulator) and a CPU always free")


def print_unpaged(u: Dict[str, Any], limit: float) -> None:
    s = u["served"]
    if u["finished"]:
        print(f"  {u['rows']:,} rows; call {u['call_seconds']:.2f} s + parse "
              f"{u['parse_seconds']:.2f} s = {u['seconds']:.2f} s "
              f"({u['settled'] / u['seconds']:,.0f} forwards/s, nothing stored)")
    else:
        got = u.get("received_bytes")
        got = "?" if got is None else f"{got / 1e6:.0f}"
        print(f"  NOT FINISHED: stopped after {u['seconds']:.0f} s (--unpaged-limit {limit:g}; "
              f"0 = no limit) having received {got} of {s['bytes'] / 1e6:.0f} MB; the figures "
              f"below are lower bounds")
    print(f"  child peak RSS {mb(u['maxrss_kb']):.1f} MB (ru_maxrss; "
          f"{mb(u['rss_before_kb']):.1f} MB before the call)   "
          f"[goal <= {GOAL_RSS_MB:.0f} MB: {mark(mb(u['maxrss_kb']) <= GOAL_RSS_MB)}]")
    print(f"  child CPU {u['cpu_seconds']:.2f} s (pyln's reader re-splits and re-copies the whole "
          f"buffer on every recv: quadratic in the answer's size)")
    print(f"  simulator: SQL + render {s['query_render_cpu']:.2f} s CPU, json.dumps "
          f"{s['dumps_cpu']:.2f} s CPU, {s['bytes'] / 1e6:.0f} MB of JSON in one answer, "
          f"sendall {s['send_wall']:.2f} s wall; bench process peak RSS "
          f"{mb(u['bench_hwm_before_kb']):.0f} -> {mb(u['bench_hwm_after_kb']):.0f} MB\n", flush=True)


def ratio(a: float, b: float) -> float:
    lo, hi = min(a, b), max(a, b)
    return hi / lo if lo else float("inf")


# --- main --------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000",
                        help="history sizes, comma-separated (default 10000,1000000)")
    parser.add_argument("--page-size", type=int, default=10000,
                        help="revenue-ops-hydration-page-size for the main runs (default 10000)")
    parser.add_argument("--page-sizes", nargs="?", const=",".join(map(str, PAGE_SIZES)),
                        default=None, metavar="LIST",
                        help="also run the largest history with these page sizes "
                             "(flag alone: 1000,10000,50000)")
    parser.add_argument("--channels", type=int, default=500)
    parser.add_argument("--days", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-unpaged", action="store_true",
                        help="skip the unpaged single-call comparison")
    parser.add_argument("--unpaged-limit", type=float, default=150.0, metavar="SECONDS",
                        help="stop the unpaged call after this long and report what it had "
                             "(default 150; 0 = let it finish: about 5 minutes on 1 M)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the plugin side of the largest hydration (child process)")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds allowed for one hydration")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    page_sizes = ([int(p) for p in args.page_sizes.split(",")] if args.page_sizes else [])

    began = time.perf_counter()
    print(f"Hydration benchmark: {args.channels} channels, history over {args.days:g} days, "
          f"seed {args.seed}, page size {args.page_size}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the "
          f"machine inflates wall times; the CPU split below does not depend on it)")
    print(f"Goals (reported, not asserted): >= {GOAL_FWD_PER_S:,} forwards/s, plugin peak RSS <= "
          f"{GOAL_RSS_MB:.0f} MB, <= {GOAL_RATIO}x between the smallest and largest history\n",
          flush=True)
    results: Dict[str, Any] = {"runs": [], "page_sizes": [], "unpaged": None}
    largest = max(sizes)
    with tempfile.TemporaryDirectory(prefix="bench-hydration-") as work:
        for n in sizes:
            base = os.path.join(work, f"node-{n}")
            with SimNode(base) as node:
                info = build_node(node, args.channels, n, args.days, args.seed)
                meter = SimMeter(node)
                print(f"== {n:,} forwards ({info['settled']:,} settled), generated in "
                      f"{info['generate_seconds']:.1f} s", flush=True)
                run = hydrate(node, meter, work, args.page_size, f"{n:,}", args.timeout)
                run["history"] = info
                results["runs"].append(run)
                print_run(run)
                if n == largest:
                    print_split(run)
                print(flush=True)
                if n != largest:
                    continue
                for ps in page_sizes:
                    r = run if ps == args.page_size else hydrate(node, meter, work, ps, f"{n:,}",
                                                                 args.timeout)
                    results["page_sizes"].append(r)
                    print(f"== {n:,} forwards, page size {ps}")
                    print_run(r)
                    print(flush=True)
                if not args.no_unpaged:
                    print(f"== unpaged: one listforwards {{\"status\": \"settled\"}} on the "
                          f"{n:,} history, from a child process (pyln LightningRpc)", flush=True)
                    u = unpaged(node, meter, args.unpaged_limit)
                    results["unpaged"] = u
                    print_unpaged(u, args.unpaged_limit)
                if args.profile:
                    print(f"== cProfile of the plugin side of the {n:,} hydration "
                          f"(ForwardSync in a child process, page size {args.page_size}; "
                          f"profiling slows it down)", flush=True)
                    print(profile_plugin_side(node, work, args.page_size, args.profile_top,
                                              args.timeout))
                    print(flush=True)

    runs = results["runs"]
    print("== summary")
    print(f"  {'forwards':>10} {'settled':>9} {'page':>6} {'pages':>6} {'hyd s':>7} {'wall s':>7} "
          f"{'fwd/s':>9} {'RSS hyd MB':>10} {'RSS end MB':>10} {'plugin CPU s':>12}")
    for r in runs + [p for p in results["page_sizes"] if p not in runs]:
        print(f"  {r['history']['forwards'] if 'history' in r else largest:>10,} "
              f"{r['rows_added']:>9,} {r['page_size']:>6} {r['pages']:>6} "
              f"{r['hydration_seconds']:>7.2f} {r['wall_to_running']:>7.2f} {r['fwd_per_s']:>9,.0f} "
              f"{mb(r['rss_hydration_kb']):>10.1f} {mb(r['rss_final_kb']):>10.1f} "
              f"{r['plugin_cpu_hydration']:>12.2f}")
    if results["unpaged"]:
        u = results["unpaged"]
        if u["finished"]:
            print(f"  {largest:>10,} {u['settled']:>9,} {'none':>6} {1:>6} {u['seconds']:>7.2f} "
                  f"{u['wall']:>7.2f} {u['settled'] / u['seconds']:>9,.0f} {'':>10} "
                  f"{mb(u['maxrss_kb']):>10.1f}   <- unpaged child (not stored)")
        else:
            print(f"  {largest:>10,} {'?':>9} {'none':>6} {1:>6} {'>' + format(u['seconds'], '.0f'):>7} "
                  f"{u['wall']:>7.2f} {'?':>9} {'':>10} {'>' + format(mb(u['maxrss_kb']), '.1f'):>10}"
                  f"   <- unpaged child, stopped unfinished")
    if len(runs) >= 2:
        small, big = runs[0], runs[-1]
        for name, key, scale, fmt in (("forwards/s", "fwd_per_s", 1, ",.0f"),
                                      ("peak RSS (end) MB", "rss_final_kb", 1024, ".1f"),
                                      ("peak RSS (hydration) MB", "rss_hydration_kb", 1024, ".1f")):
            q = ratio(small[key], big[key])
            print(f"  {name} {small['label']} vs {big['label']}: {small[key] / scale:{fmt}} vs "
                  f"{big[key] / scale:{fmt}} -> {q:.2f}x   [goal <= {GOAL_RATIO}x: "
                  f"{mark(q <= GOAL_RATIO)}]")
    if results["page_sizes"]:
        print(f"  page sizes on {largest:,}: " + ", ".join(
            f"{p['page_size']}: {p['fwd_per_s']:,.0f} fwd/s, {mb(p['rss_final_kb']):.1f} MB"
            for p in results["page_sizes"]))
    print(f"\nbench finished in {time.perf_counter() - began:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
