"""Wires the parts together: start-up sequence, loops, live events, status, shutdown.

The plugin shell calls `open()` inside `init` (fast: options, database, migrations), then
`start()`, which runs hygiene and hydration on a background thread and only then starts
the loops, so `init` returns at once and RPC methods answer during hydration.
"""
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from modules import __version__
from modules.config import Config
from modules.database import Database
from modules.errors import BUSY, UserError
from modules.fee_cycle import FeeCycle
from modules.flow_analysis import FlowAnalyzer
from modules.hydration import CREATED, UPDATED, ForwardSync, SyncResult
from modules.job_manager import HygieneResult, cleanup_orphans
from modules.models import Channel
from modules.node import NodeAdapter, NodeError, parse_forward
from modules.rebalancer import Rebalancer
from modules.scheduler import Loop, Scheduler

Log = Callable[[str, str], None]

STARTING, HYDRATING, RUNNING, STOPPED, FAILED = "starting", "hydrating", "running", "stopped", "failed"


class Service:
    def __init__(self, config: Config, node: NodeAdapter, log: Log, clock: Callable[[], float] = time.time):
        self.config = config
        self.node = node
        self.log = log
        self.clock = clock
        self.started_at = clock()
        self.phase = STARTING
        self.db: Optional[Database] = None
        self.sync: Optional[ForwardSync] = None
        self.flow: Optional[FlowAnalyzer] = None
        self.rebalancer: Optional[Rebalancer] = None
        self.fees: Optional[FeeCycle] = None
        self.scheduler = Scheduler()
        self.hygiene: Optional[HygieneResult] = None
        self.hydration: Optional[SyncResult] = None
        self.plugins: List[str] = []
        self.channels: List[Channel] = []
        self.startup_error: Optional[str] = None
        self._startup_thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()

    # --- start-up ------------------------------------------------------------
    def open(self) -> None:
        """Database and migrations, before any thread starts. Raises on a bad db path."""
        self.db = Database(self.config.db_path)
        self.db.migrate()
        self.sync = ForwardSync(self.node, self.db, self.config.hydration_page_size,
                                log=lambda m: self.log(m, "info"))
        self.flow = FlowAnalyzer(self.db, self.config)
        self.rebalancer = Rebalancer(self.node, self.db, self.config, self.log)
        self.fees = FeeCycle(self.node, self.db, self.config, self.log)
        jitter = self.config.loop_jitter_percent / 100
        for name, cycle, interval in (
                ("flow", self.flow_cycle, self.config.flow_interval_seconds),
                ("fee", self.fee_cycle, self.config.fee_interval_seconds),
                ("rebalance", self.rebalance_cycle, self.config.rebalance_interval_seconds),
                ("jobs", self.watch_jobs, self.config.rebalance_watch_interval_seconds)):
            self.scheduler.add(Loop(name, cycle, interval, jitter, log=self.log, clock=self.clock))

    def start(self) -> None:
        self._startup_thread = threading.Thread(target=self._startup, name="startup", daemon=True)
        self._startup_thread.start()

    def _startup(self) -> None:
        try:
            self.plugins = self._plugin_names() or []
            self.hygiene = cleanup_orphans(self.node, self.sling_loaded, self.log, self.config.dry_run)
            leftover = self.rebalancer.jobs.stop_all("still open when the plugin restarted", self.clock())
            if leftover:
                self.log(f"Reconciled {leftover} rebalance jobs left open by an earlier run", "info")
            self.phase = HYDRATING
            self.log("Hydration: reading forwarding history from the node", "info")
            self.hydration = self.sync.catch_up()
            self.log(f"Hydration: stored {self.hydration.rows_added} new settled forwards from "
                     f"{self.hydration.pages} pages in {self.hydration.seconds:.2f} s", "info")
            self._refresh_channels()
        except Exception as e:  # a node that fails at start-up must not kill the plugin
            self.startup_error = f"{type(e).__name__}: {e}"
            self.log(f"Start-up incomplete: {self.startup_error}; loops start anyway and retry", "warn")
        if self._stopping.is_set():
            return
        self.scheduler.start(first_delays={"flow": 0})  # flows known before fees or rebalances
        self.phase = RUNNING

    def _plugin_names(self) -> Optional[List[str]]:
        try:
            return self.node.plugin_names()
        except NodeError as e:
            self.log(f"could not list plugins: {e}", "warn")
            return None

    @property
    def sling_loaded(self) -> bool:
        return "sling" in self.plugins

    def _refresh_channels(self) -> List[Channel]:
        self.channels = self.node.list_channels()
        return self.channels

    # --- loops ---------------------------------------------------------------
    def flow_cycle(self) -> Dict[str, Any]:
        """Catch up new forwards (the hydration path), then analyse every open channel."""
        synced = self.sync.catch_up()
        channels = [c for c in self._refresh_channels() if c.is_active]
        flows = self.flow.analyze(channels, self.clock())
        return {"forwards_added": synced.rows_added, "channels": len(flows),
                "by_state": self.flow.counts_by_state()}

    def flow_report(self) -> Dict[str, Any]:
        return {"window_days": self.config.flow_window_days,
                "by_state": self.flow.counts_by_state(),
                "channels": [flow_view(f) for f in sorted(self.flow.flows.values(),
                                                          key=lambda f: -f.daily_volume_msat)]}

    def fee_cycle(self) -> Dict[str, Any]:
        self.plugins = self._plugin_names() or self.plugins   # clboss may come and go (None: keep)
        channels = self._refresh_channels()
        return self.fees.run(channels, self.flow.flows, self.plugins, self.clock())

    def fee_report(self, scid: Optional[str]) -> Dict[str, Any]:
        channels = self._refresh_channels()   # the fees as they are now, not as last cycle saw them
        if scid is not None and scid not in {c.short_channel_id for c in channels}:
            raise UserError(f"unknown channel {scid}: not among this node's channels")
        return self.fees.report(scid, channels, self.flow.flows)

    def rebalance_cycle(self) -> Dict[str, Any]:
        result = self.rebalance(None, None, False)
        return {"ran": result["ran"], "reason": result.get("reason"),
                "started": len(result.get("started", [])), "ended": len(result["ended"])}

    def watch_jobs(self) -> Dict[str, Any]:
        """Frequent: sling jobs are checked between passes, so none outruns its reservation."""
        if not (self.db.running_jobs() or self.rebalancer.jobs.has_loose_jobs):
            return {"running": 0, "ended": 0}
        try:
            channels = self._refresh_channels()
        except NodeError as e:
            self.log(f"job watch: cannot list channels ({e}); judging jobs by sling alone", "warn")
            channels = None
        ended = self.rebalancer.watch(channels, self.clock())
        return {"running": len(self.db.running_jobs()), "ended": len(ended)}

    def rebalance(self, scid: Optional[str], amount_sats: Optional[int], force: bool) -> Dict[str, Any]:
        """An automatic pass (scid None) or the evaluation of one channel, on fresh channels."""
        self.plugins = self._plugin_names() or self.plugins   # sling may have been started since
        if self.sling_loaded and not (self.hygiene and self.hygiene.sling_loaded):
            self.hygiene = cleanup_orphans(self.node, True, self.log, self.config.dry_run)
        channels = self._refresh_channels()
        return self.rebalancer.run_pass(channels, self.flow.flows, self.sling_loaded, self.clock(),
                                        scid=scid, amount_sats=amount_sats, force=force)

    def require_running(self) -> None:
        if self.phase != RUNNING:
            raise UserError(f"cl-revenue-ops is {self.phase}; try again once it is running", BUSY)

    def run_loop_now(self, name: str, timeout: float = 300.0) -> Any:
        """Runs a loop's cycle now (on its own thread) and returns its result."""
        self.require_running()
        loop = self.scheduler.loops[name]
        if not loop.run_now(wait=True, timeout=timeout):
            raise UserError(f"the {name} cycle did not finish within {timeout:g} s", BUSY)
        if loop.stats.last_error:
            raise UserError(f"the {name} cycle failed: {loop.stats.last_error}", BUSY)
        return loop.stats.last_result

    # --- live events -----------------------------------------------------------
    def on_forward_event(self, payload: Dict[str, Any]) -> int:
        """Stores a settled forward as it happens; the marks are left to the pages."""
        if payload.get("status") != "settled" or self.db is None:
            return 0
        return self.db.store_forwards([parse_forward(payload)])

    # --- status ----------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        db = self.db
        database = {"path": self.config.db_path}
        if db is not None:
            database.update({
                "schema_version": db.schema_version(),
                "forwards_rows": db.forwards_count(),
                "file_size_bytes": db.file_size_bytes(),
                "high_water_mark": {"created_index": db.get_mark(CREATED),
                                    "updated_index": db.get_mark(UPDATED)},
                "hydration": self.hydration.to_dict() if self.hydration else None,
            })
        return {
            "version": __version__,
            "phase": self.phase,
            "uptime_seconds": int(self.clock() - self.started_at),
            "dry_run": self.config.dry_run,
            "startup_error": self.startup_error,
            "loops": self.scheduler.stats(),
            "database": database,
            "sling": self._sling_status(),
            "startup_hygiene": self.hygiene.to_dict() if self.hygiene else None,
            "rebalancing": self.rebalancer.status(self.clock()) if self.rebalancer else None,
            "fees": self.fees.last_result if self.fees else None,
            "channels": {"count": len(self.channels),
                         "active": sum(1 for c in self.channels if c.is_active),
                         "by_flow_state": self.flow.counts_by_state() if self.flow else None},
        }

    def _sling_status(self) -> Dict[str, Any]:
        if not self.sling_loaded:
            return {"loaded": False, "jobs": 0, "rebalancing": "disabled: sling plugin not loaded"}
        try:
            jobs = len(self.node.sling_jobs())
        except NodeError as e:
            return {"loaded": True, "jobs": None, "error": str(e)}
        return {"loaded": True, "jobs": jobs, "rebalancing": "enabled"}

    # --- shutdown --------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self.scheduler.stop()
        self.phase = STOPPED
        if self.db is None:
            return
        try:
            stopped = self.rebalancer.shutdown(self.clock(), timeout=self.config.rpc_timeout_seconds + 5)
            if stopped:
                self.log(f"Stopped {stopped} rebalance jobs we had started", "info")
        except Exception as e:  # shutting down: report and go on closing
            self.log(f"could not stop rebalance jobs: {e}", "warn")
        self.db.close()

    def release_thread(self) -> None:
        """An RPC worker thread is done: its database connection goes with it."""
        if self.db is not None:
            self.db.release_thread()


def flow_view(flow) -> Dict[str, Any]:
    """A ChannelFlow as operators read it: sats for volumes, msat kept for fees."""
    return {"short_channel_id": flow.short_channel_id, "state": flow.state,
            "flow_ratio": round(flow.flow_ratio, 3),
            "daily_volume_sats": flow.daily_volume_msat // 1000,
            "daily_out_sats": flow.daily_out_msat // 1000,
            "in_sats": flow.in_msat // 1000, "out_sats": flow.out_msat // 1000,
            "fees_earned_msat": flow.fees_earned_msat,
            "in_count": flow.in_count, "out_count": flow.out_count,
            "updated_at": flow.updated_at}
