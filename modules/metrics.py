"""Opt-in Prometheus metrics (`revenue-ops-metrics-port`), served on 127.0.0.1 only.

A scrape reads what the plugin already keeps: the channels and flows of the last cycles,
the scheduler's loop stats, and the database through the same reads revenue-status uses.
Nothing is counted on a hot path and a scrape makes no call to lightningd or sling, so
it answers while they hang. The shell imports this module only when the port is set:
prometheus-client is needed on a node only then.
"""
import sqlite3
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from modules import __version__
from modules.database import HOUR_SECONDS, DatabaseGone
from modules.fee_cycle import MANAGED_STATES
from modules.models import FLOW_STATES

HOST = "127.0.0.1"   # never 0.0.0.0: the figures say what the node earns and holds
PHASES = ("starting", "hydrating", "running", "stopped", "failed")
CHANNEL_LABELS = ["scid", "peer_id"]
# The fees-earned counters sum the whole history once (when hydration ends, again at any
# phase change); after that only the hours since a cut this many hours back are read.
EARNED_OPEN_HOURS = 2

Log = Callable[[str, str], None]


class EarnedTotals:
    """Per channel fees earned over the whole stored history, msat, cheap per scrape.

    The whole history is one full scan of the hourly rollups (measured in
    bench/bench_metrics.py: seconds for 10 M forwards), so it is summed once; after that
    the hours older than EARNED_OPEN_HOURS are closed into the base as time passes (an
    index range) and only the open hours are read at each scrape. A forward lands in the
    hour it settled, so closed hours do not change while the plugin runs: hydration fills
    old hours before the phase turns to running, which sums everything again. (A stored
    live row replaced by the node's, hours later, is the exception: its difference counts
    from the next full sum.)"""

    def __init__(self, open_hours: int = EARNED_OPEN_HOURS):
        self.open_hours = open_hours
        self._lock = threading.Lock()
        self._base: Dict[str, int] = {}
        self._cut_hour: Optional[int] = None
        self._summed_in: Optional[str] = None

    def read(self, db, now: float, phase: str) -> Dict[str, int]:
        with self._lock:
            cut = int(now) // HOUR_SECONDS - self.open_hours
            if self._cut_hour is None or phase != self._summed_in:
                self._base = db.fees_earned_by_hours(0, cut)
                self._cut_hour, self._summed_in = cut, phase
            elif cut > self._cut_hour:   # close the hours that left the open range
                for scid, msat in db.fees_earned_by_hours(self._cut_hour, cut).items():
                    self._base[scid] = self._base.get(scid, 0) + msat
                self._cut_hour = cut
            totals = dict(self._base)
            for scid, msat in db.fees_earned_by_hours(self._cut_hour).items():
                totals[scid] = totals.get(scid, 0) + msat
            return totals


class RevenueCollector:
    """A prometheus_client custom collector over a running Service."""

    def __init__(self, service):
        self.service = service
        self.earned = EarnedTotals()
        self.scrapes = 0
        self.last_problem: Optional[str] = None   # a part a scrape could not read, for revenue-status

    def collect(self) -> List[Any]:
        service = self.service
        now = service.clock()
        families: List[Any] = []
        problems: List[str] = []
        parts = (("plugin", self._plugin), ("loops", self._loops), ("channels", self._channels),
                 ("channel totals", self._channel_totals), ("database", self._database),
                 ("budget", self._budget))
        try:
            for name, part in parts:
                try:
                    for family in part(now):   # what a part read before it failed is kept
                        families.append(family)
                except (DatabaseGone, sqlite3.Error) as e:   # the rest is still worth serving
                    problems.append(f"{name}: {type(e).__name__}: {e}")
        finally:
            if service.db is not None:   # one thread per scrape: its connection goes with it
                service.db.release_thread()
        families.append(gauge("revenue_ops_scrape_problem",
                              "1 when a part of this scrape could not be read (the database); "
                              "revenue-status metrics.last_problem says which",
                              1 if problems else 0))
        self.scrapes += 1
        self.last_problem = "; ".join(problems) or None
        return families

    # --- the parts -----------------------------------------------------------------------
    def _plugin(self, now: float) -> Iterable[Any]:
        service = self.service
        info = InfoMetricFamily("revenue_ops", "cl-revenue-ops version", value={"version": __version__})
        phase = GaugeMetricFamily("revenue_ops_phase", "1 for the phase the plugin is in", labels=["phase"])
        for name in PHASES:
            phase.add_metric([name], 1 if service.phase == name else 0)
        return [info, phase,
                gauge("revenue_ops_dry_run", "1 when the plugin decides and records but changes nothing",
                      1 if service.config.dry_run else 0),
                gauge("revenue_ops_start_time_seconds", "when the plugin started, unix seconds",
                      service.started_at),
                gauge("revenue_ops_sling_loaded", "1 when the sling plugin was loaded at the last look",
                      1 if service.sling is not None and service.sling.loaded else 0)]

    def _loops(self, now: float) -> Iterable[Any]:
        runs = CounterMetricFamily("revenue_ops_loop_runs", "cycles a loop has run since the plugin started",
                                   labels=["loop"])
        errors = CounterMetricFamily("revenue_ops_loop_errors", "cycles of a loop that ended in an error",
                                     labels=["loop"])
        duration = GaugeMetricFamily("revenue_ops_loop_last_duration_seconds",
                                     "how long a loop's last cycle took", labels=["loop"])
        started = GaugeMetricFamily("revenue_ops_loop_last_run_timestamp_seconds",
                                    "when a loop's last cycle started, unix seconds", labels=["loop"])
        failing = GaugeMetricFamily("revenue_ops_loop_failing", "1 when a loop's last cycle ended in an error",
                                    labels=["loop"])
        for name, loop in self.service.scheduler.loops.items():
            stats = loop.stats
            runs.add_metric([name], stats.runs)
            errors.add_metric([name], stats.errors)
            failing.add_metric([name], 1 if stats.last_error else 0)
            if stats.last_duration_seconds is not None:
                duration.add_metric([name], stats.last_duration_seconds)
            if stats.last_start is not None:
                started.add_metric([name], stats.last_start)
        return [runs, errors, duration, started, failing]

    def _managed_channels(self) -> list:
        return [c for c in self.service.channels if c.state in MANAGED_STATES]

    def _channels(self, now: float) -> Iterable[Any]:
        """What the last listpeerchannels and the last flow cycle said of each channel."""
        fee = channel_gauge("revenue_ops_channel_fee_ppm", "the channel's proportional fee, ppm")
        base = channel_gauge("revenue_ops_channel_fee_base_msat", "the channel's base fee, msat")
        ratio = channel_gauge("revenue_ops_channel_local_ratio", "our share of the channel's capacity, 0 to 1")
        local = channel_gauge("revenue_ops_channel_local_balance_sats", "our side of the channel, sats")
        capacity = channel_gauge("revenue_ops_channel_capacity_sats", "the channel's capacity, sats")
        state = GaugeMetricFamily("revenue_ops_channel_flow_state",
                                  "1 for the channel's flow state (SOURCE, SINK, BALANCED, IDLE)",
                                  labels=CHANNEL_LABELS + ["state"])
        flow_ratio = channel_gauge("revenue_ops_channel_flow_ratio",
                                   "(out - in) / (out + in) over the flow window, smoothed; -1 to 1")
        window_fees = channel_gauge("revenue_ops_channel_fees_earned_window_msat",
                                    "fees earned as the outgoing channel over the flow window "
                                    "(revenue-ops-flow-window-days), msat")
        flows = self.service.flow.flows if self.service.flow is not None else {}
        for c in self._managed_channels():
            labels = [c.short_channel_id, c.peer_id]
            fee.add_metric(labels, c.fee_ppm)
            base.add_metric(labels, c.fee_base_msat)
            ratio.add_metric(labels, c.local_ratio)
            local.add_metric(labels, c.local_msat // 1000)
            capacity.add_metric(labels, c.capacity_msat // 1000)
            flow = flows.get(c.short_channel_id)
            if flow is None:
                continue
            for name in FLOW_STATES:
                state.add_metric(labels + [name], 1 if flow.state == name else 0)
            flow_ratio.add_metric(labels, flow.flow_ratio)
            window_fees.add_metric(labels, flow.fees_earned_msat)
        return [fee, base, ratio, local, capacity, state, flow_ratio, window_fees]

    def _channel_totals(self, now: float) -> Iterable[Any]:
        """Counters from the database: what each channel earned and what refilling it cost."""
        db = self.service.db
        channels = self._managed_channels()
        if db is None:
            return []
        earned = self.earned.read(db, now, self.service.phase)
        rebalanced = db.rebalance_totals()
        fees = CounterMetricFamily("revenue_ops_channel_fees_earned_msat",
                                   "fees earned as the outgoing channel, over every stored forward, msat",
                                   labels=CHANNEL_LABELS)
        paid = CounterMetricFamily("revenue_ops_channel_rebalance_fees_paid_msat",
                                   "fees paid by rebalance jobs into the channel (as sling reports them), msat",
                                   labels=CHANNEL_LABELS)
        moved = CounterMetricFamily("revenue_ops_channel_rebalanced_msat",
                                    "amount rebalance jobs moved into the channel, msat", labels=CHANNEL_LABELS)
        for c in channels:
            labels = [c.short_channel_id, c.peer_id]
            moved_msat, paid_msat = rebalanced.get(c.short_channel_id, (0, 0))
            fees.add_metric(labels, earned.get(c.short_channel_id, 0))
            paid.add_metric(labels, paid_msat)
            moved.add_metric(labels, moved_msat)
        return [fees, paid, moved]

    def _database(self, now: float) -> Iterable[Any]:
        service = self.service
        hydration = service.hydration
        if hydration is not None:   # the start-up hydration, once it finished
            yield gauge("revenue_ops_hydration_rows_added", "forwards the start-up hydration stored",
                        hydration.rows_added)
            yield gauge("revenue_ops_hydration_duration_seconds", "how long the start-up hydration took",
                        hydration.seconds)
        db = service.db
        if db is None:
            return
        yield gauge("revenue_ops_database_problem", "1 while revenue-status reports a database problem",
                    1 if db.problem() else 0)
        yield gauge("revenue_ops_database_size_bytes", "the database file and its WAL, bytes",
                    db.file_size_bytes())
        yield gauge("revenue_ops_forwards_stored_rows",
                    "settled forwards in the database (grows while hydrating)", db.forwards_count())

    def _budget(self, now: float) -> Iterable[Any]:
        rebalancer = self.service.rebalancer
        if rebalancer is None:
            return []
        status = rebalancer.status(now)   # what revenue-status reports, from the database alone
        budget = status["budget"]
        return [gauge("revenue_ops_budget_limit_sats", "the daily rebalance fee budget, sats",
                      budget["limit_sats"]),
                gauge("revenue_ops_budget_spent_24h_sats",
                      "rebalance fees charged to the budget in the last 24 h, sats", budget["spent_24h_sats"]),
                gauge("revenue_ops_budget_reserved_sats",
                      "worst-case fees reserved by running rebalance jobs, sats", budget["reserved_sats"]),
                gauge("revenue_ops_budget_available_sats", "what the budget still allows, sats",
                      budget["available_sats"]),
                gauge("revenue_ops_rebalance_jobs_running", "rebalance jobs running in sling",
                      len(status["active_jobs"]))]


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def channel_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=CHANNEL_LABELS)


def make_registry(service) -> Tuple[CollectorRegistry, RevenueCollector]:
    """Our collector and the process's CPU and memory, apart from prometheus_client's global
    registry (nothing else in the process registers there by accident)."""
    registry = CollectorRegistry()
    collector = RevenueCollector(service)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry, collector


class MetricsServer:
    """The HTTP endpoint in daemon threads. A port it cannot listen on leaves the plugin
    running without metrics: the log and revenue-status say why."""

    def __init__(self, service, port: int, log: Log):
        self.port = port
        self.log = log
        self.registry, self.collector = make_registry(service)
        self.listening = False
        self.error: Optional[str] = None
        self._server = None
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()

    def start(self) -> None:
        """Binds on a thread of its own: init answers lightningd without waiting for it."""
        threading.Thread(target=self._serve, name="metrics-start", daemon=True).start()

    def _serve(self) -> None:
        try:
            server, _ = start_http_server(self.port, addr=HOST, registry=self.registry)
        except OSError as e:
            self.error = f"cannot listen on {HOST}:{self.port}: {e.strerror or e}"
            self.log(f"Metrics off: {self.error}; everything else runs on. Choose a free "
                     f"revenue-ops-metrics-port (or 0) and restart the plugin", "warn")
            return
        with self._lock:
            if self._closed:   # shut down while binding
                _close(server)
                return
            self._server = server
            self.listening = True
        self.log(f"Metrics: Prometheus endpoint at http://{HOST}:{self.port}/metrics", "info")
        self._sum_history_when_running()

    def _sum_history_when_running(self) -> None:
        """The fees-earned history is summed once hydration is done, here rather than in a
        scrape, so no scrape waits for it (seconds on a large history)."""
        service = self.collector.service
        while service.phase in ("starting", "hydrating"):
            if self._stopping.wait(1.0):
                return
        if service.phase != "running" or service.db is None:
            return
        try:
            self.collector.earned.read(service.db, service.clock(), service.phase)
        except (DatabaseGone, sqlite3.Error) as e:   # a scrape will try again and report it
            self.log(f"Metrics: could not sum the fees earned yet: {e}", "info")
        finally:
            service.db.release_thread()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._closed = True
            server, self._server = self._server, None
            self.listening = False
        if server is not None:
            _close(server)

    def status(self) -> Dict[str, Any]:
        return {"enabled": True, "url": f"http://{HOST}:{self.port}/metrics", "listening": self.listening,
                "error": self.error, "scrapes": self.collector.scrapes,
                "last_problem": self.collector.last_problem}


def _close(server) -> None:
    server.shutdown()
    server.server_close()
