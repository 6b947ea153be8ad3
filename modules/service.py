"""Wires the parts together: start-up sequence, loops, live events, status, shutdown.

The plugin shell calls `open()` inside `init` (fast: options, database, migrations), then
`start()`, which runs hygiene and hydration on a background thread and only then starts
the loops, so `init` returns at once and RPC methods answer during hydration.
"""
import dataclasses
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from modules import __version__
from modules import policy as peer_policy
from modules.config import Config, ConfigError, config_with, option_values
from modules.database import Database, DatabaseGone
from modules.errors import BUSY, UserError
from modules.fee_cycle import FeeCycle
from modules.flow_analysis import FlowAnalyzer
from modules.forward_events import Rejected, check_forward_event
from modules.hydration import CREATED, UPDATED, ForwardSync, SyncResult
from modules.job_manager import HygieneResult, runs
from modules.models import LOCAL_FAILED, Channel, SlingWindow
from modules.node import NodeAdapter, NodeError
from modules.rebalancer import Rebalancer
from modules.report import build_report, selected_scids, window_since
from modules.scheduler import Loop, Scheduler
from modules.sling_link import SlingLink

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
        self.sling: Optional[SlingLink] = None
        self.hydration: Optional[SyncResult] = None
        self.plugins: List[str] = []
        self.channels: List[Channel] = []
        self.startup_error: Optional[str] = None
        self._startup_thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._jobs_stood_down = False
        self._config_lock = threading.Lock()
        self.metrics = None   # the Prometheus endpoint (modules/metrics.py) when its port is set

    # --- start-up ------------------------------------------------------------
    def open(self) -> None:
        """Database and migrations, before any thread starts. Raises on a bad db path."""
        self.db = Database(self.config.db_path, log=self.log)
        self.db.migrate()
        self.sync = ForwardSync(self.node, self.db, self.config.hydration_page_size,
                                log=lambda m: self.log(m, "info"), stopping=self._stopping.is_set)
        self.flow = FlowAnalyzer(self.db, self.config)
        self.rebalancer = Rebalancer(self.node, self.db, self.config, self.log)
        self.sling = SlingLink(self.node, self.db, self.rebalancer, self.config, self.log, self.clock)
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
            plugins = self._plugin_names()
            self.plugins = plugins or []
            # Hygiene, jobs left open, the ledger: before any pass (again whenever sling returns).
            self.sling.refresh(plugins)
            self.phase = HYDRATING
            self.log("Hydration: reading forwarding history from the node", "info")
            self.hydration = self.sync.catch_up()
            self.log(f"Hydration: stored {self.hydration.rows_added} new settled forwards from "
                     f"{self.hydration.pages} pages in {self.hydration.seconds:.2f} s", "info")
            if not self._stopping.is_set():
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
    def hygiene(self) -> Optional[HygieneResult]:
        return self.sling.hygiene if self.sling else None

    def _refresh_channels(self) -> List[Channel]:
        self.channels = self.node.list_channels()
        return self.channels

    # --- loops ---------------------------------------------------------------
    def flow_cycle(self) -> Dict[str, Any]:
        """Catch up new forwards (the hydration path), then analyse every open channel."""
        self.flow.config = self.config   # an option changed at runtime: from this cycle on
        self.sync.page_size = self.config.hydration_page_size
        self.db.check_present()
        synced = self.sync.catch_up()
        self.db.roll_days(self.clock())   # closed days into the daily rollups (revenue-report)
        channels = [c for c in self._refresh_channels() if c.is_active]
        flows = self.flow.analyze(channels, self.clock())
        return {"forwards_added": synced.rows_added, "channels": len(flows),
                "by_state": self.flow.counts_by_state()}

    def flow_report(self) -> Dict[str, Any]:
        return {"window_days": self.config.flow_window_days,
                "by_state": self.flow.counts_by_state(),
                "channels": [flow_view(f) for f in sorted(self.flow.flows.values(),
                                                          key=lambda f: -f.daily_volume_msat)]}

    def revenue_report(self, days: int, target: Optional[Tuple[str, str]], view: str,
                       count: int) -> Dict[str, Any]:
        """Earned, rebalance spend and net per channel, per peer and in total (modules/report.py)."""
        now = self.clock()
        channels = self.node.list_channels()
        notes = []
        try:
            self.db.roll_days(now)   # usually done by the flow cycle: then nothing to do
        except sqlite3.Error as e:   # a storage fault: the read is exact without it, only slower
            notes.append(f"closed days could not be rolled into the daily rollups ({e}): read from the hourly ones")
        since = window_since(now, days)
        flows = self.db.report_flow(since)
        spend = self.db.rebalance_spend_since(since)
        scids = selected_scids(channels, flows, spend, target)
        if self.phase in (STARTING, HYDRATING):
            notes.append("the forwarding history is still being read from the node: figures are incomplete")
        sling = self._sling_windows([s for s in scids if s in spend], notes)
        return build_report(flows, spend, channels, days, now, target, view, count, sling, notes)

    def _sling_windows(self, scids: List[str], notes: List[str]) -> Dict[str, SlingWindow]:
        """sling's own figures for the channels our jobs went into: one sling-stats each, none
        after the first that fails (the report answers without them, and says so)."""
        if not scids:
            return {}
        plugins = self._plugin_names()
        if "sling" not in (plugins if plugins is not None else (["sling"] if self.sling.loaded else [])):
            notes.append("sling is not loaded: its own figures are not shown beside ours")
            return {}
        windows: Dict[str, SlingWindow] = {}
        for scid in scids:
            try:
                windows[scid] = self.node.sling_window(scid)
            except NodeError as e:
                notes.append(f"sling's figures are shown for {len(windows)} of the {len(scids)} channels"
                             f" with jobs: {e}")
                break
        return windows

    def fee_cycle(self) -> Dict[str, Any]:
        self.fees.config = config = self.config   # an option changed at runtime: from this cycle on
        self.db.check_present()   # a fee set must be recorded: none while the file is gone
        self.plugins = self._plugin_names() or self.plugins   # clboss may come and go (None: keep)
        channels = self._refresh_channels()
        now = self.clock()
        # a known refill price counts in the liquidity price only when refills can be bought
        refills = (self.sling.refusal is None and not config.dry_run
                   and self.rebalancer.budget_available_msat(now) > 0)
        result = self.fees.run(channels, self.flow.flows, self.plugins, now, refills_available=refills,
                               policies=self._active_policies(now))
        # the kept channels show the fees now in force (metrics read them between refreshes)
        self.channels = with_fees_set(channels, self.fees.last_decisions, config.fee_base_msat)
        return result

    def fee_report(self, scid: Optional[str]) -> Dict[str, Any]:
        channels = self._refresh_channels()   # the fees as they are now, not as last cycle saw them
        if scid is not None and scid not in {c.short_channel_id for c in channels}:
            raise UserError(f"unknown channel {scid}: not among this node's channels")
        return self.fees.report(scid, channels, self.flow.flows, self.clock())

    def rebalance_cycle(self) -> Dict[str, Any]:
        result = self.rebalance(None, None, False)
        return {"ran": result["ran"], "reason": result.get("reason"),
                "started": len(result.get("started", [])), "ended": len(result["ended"])}

    def watch_jobs(self) -> Dict[str, Any]:
        """Frequent: notices sling arriving (or coming back) and does its arrival duties at
        once; checks our sling jobs between passes (their cost, their end)."""
        try:
            self.db.check_present()
        except DatabaseGone:
            self._stand_down_jobs()
            raise
        self._adopt_rebalance_config()
        plugins = self._plugin_names()   # one cheap call
        if plugins is not None:
            self.plugins = plugins
        self.sling.refresh(plugins)
        if not self.sling.loaded or not self.db.running_jobs():
            # without sling its jobs are gone with it; they are reconciled when it returns
            return {"running": len(self.db.running_jobs()), "ended": 0}
        try:
            channels = self._refresh_channels()
        except NodeError as e:
            self.log(f"job watch: cannot list channels ({e}); judging jobs by sling alone", "warn")
            channels = None
        ended = self.rebalancer.watch(channels, self.clock())
        return {"running": len(self.db.running_jobs()), "ended": len(ended)}

    def _stand_down_jobs(self) -> None:
        """The database file is gone: no job can be watched or charged any more, so the sling
        tasks still paying stop (start-up hygiene left sling only the jobs we started)."""
        if self._jobs_stood_down or self.config.dry_run or not (self.sling and self.sling.loaded):
            return
        scids = sorted(scid for scid, states in self.node.sling_tasks().items() if runs(states))
        for scid in scids:
            self.node.sling_stop(scid)
        self._jobs_stood_down = True
        self.log(f"Database gone: stopped {len(scids)} sling jobs; rebalancing waits for a restart", "warn")

    def rebalance(self, scid: Optional[str], amount_sats: Optional[int], force: bool) -> Dict[str, Any]:
        """An automatic pass (scid None) or the evaluation of one channel, on fresh channels."""
        self.db.check_present()
        self._adopt_rebalance_config()
        plugins = self._plugin_names()   # sling may have been started (or stopped) since
        if plugins is not None:
            self.plugins = plugins
        ready = self.sling.refresh(plugins)
        channels = self._refresh_channels()
        now = self.clock()
        return self.rebalancer.run_pass(channels, self.flow.flows, ready, now,
                                        scid=scid, amount_sats=amount_sats, force=force,
                                        sling_problem=self.sling.refusal,
                                        outlooks=self.fees.demand_outlooks(),
                                        policies=self._active_policies(now))

    # --- options changed at runtime (setconfig) -----------------------------------
    def set_option(self, name: str, raw: Any) -> Config:
        """Checks a new value as at start-up and puts it in force: status shows it at once,
        each loop uses it from its next cycle (a cycle under way ends with what it began
        with), a loop's new interval counts from its last cycle. A bad value: a UserError
        with the option's range, and nothing changes."""
        with self._config_lock:
            try:
                config = config_with(self.config, name, raw)
            except ConfigError as e:
                raise UserError(str(e))
            self.config = config
            self.node.set_timeout(config.rpc_timeout_seconds)
            jitter = config.loop_jitter_percent / 100
            for loop, interval in self._loop_intervals(config).items():
                if loop in self.scheduler.loops:
                    self.scheduler.loops[loop].set_interval(interval, jitter)
        self.log(f"option {name} is now {option_values(config)[name]}", "info")
        return config

    @staticmethod
    def _loop_intervals(config: Config) -> Dict[str, int]:
        return {"flow": config.flow_interval_seconds, "fee": config.fee_interval_seconds,
                "rebalance": config.rebalance_interval_seconds,
                "jobs": config.rebalance_watch_interval_seconds}

    def _adopt_rebalance_config(self) -> None:
        """The rebalancer and its jobs take a changed config between passes, never inside one."""
        config = self.config
        if self.rebalancer.config is config:
            return
        with self.rebalancer.exclusive():
            self.rebalancer.config = self.rebalancer.jobs.config = self.sling.config = config

    # --- peer policies (revenue-policy) --------------------------------------------
    def _policies(self) -> List[peer_policy.PeerPolicy]:
        return [peer_policy.PeerPolicy(**row) for row in self.db.peer_policies()]

    def _active_policies(self, now: float) -> Dict[str, peer_policy.PeerPolicy]:
        return peer_policy.active_policies(self._policies(), now)

    def set_policy(self, peer_id: Any, strategy: Any, fee_ppm: Any, min_fee_ppm: Any, max_fee_ppm: Any,
                   rebalance: Any, expires_hours: Any) -> Dict[str, Any]:
        """Checks every parameter, then that the node has a channel to the peer, then stores;
        anything wrong: a UserError naming it, and nothing stored."""
        now = self.clock()
        policy = peer_policy.build_policy(peer_id, strategy, fee_ppm, min_fee_ppm, max_fee_ppm,
                                          rebalance, expires_hours, now)
        channels = self._refresh_channels()
        if policy.peer_id not in peer_policy.known_peers(channels):
            raise UserError(f"unknown peer {policy.peer_id}: this node has no channel to it that is "
                            f"not closing")
        self.db.save_peer_policy(dataclasses.asdict(policy))
        self.log(f"Peer policy set for {policy.peer_id}: {policy.fee_text()}, rebalance "
                 f"{policy.rebalance}" + ("" if policy.expires_at is None else
                                          f", until {policy.expires_at:.0f}"), "info")
        return self._policy_view(policy, channels, now)

    def get_policy(self, peer_id: Any) -> Dict[str, Any]:
        """The peer's policy, or what is in force without one."""
        peer = peer_policy.check_peer_id(peer_id)
        found = next((p for p in self._policies() if p.peer_id == peer), None)
        return self._policy_view(found or peer_policy.PeerPolicy(peer), self.channels, self.clock(),
                                 stored=found is not None)

    def list_policies(self) -> Dict[str, Any]:
        now = self.clock()
        return {"policies": [self._policy_view(p, self.channels, now) for p in self._policies()]}

    def delete_policy(self, peer_id: Any) -> Dict[str, Any]:
        peer = peer_policy.check_peer_id(peer_id)
        deleted = self.db.delete_peer_policy(peer)
        if deleted:
            self.log(f"Peer policy deleted for {peer}: the defaults apply from the loops' next cycle", "info")
        return {"peer_id": peer, "deleted": deleted}

    @staticmethod
    def _policy_view(policy: peer_policy.PeerPolicy, channels: List[Channel], now: float,
                     stored: bool = True) -> Dict[str, Any]:
        """A policy as revenue-policy shows it: its fields, whether it has expired, what is in
        force for the peer, and the peer's channels as the loops last saw them."""
        view = policy.to_dict(now)
        if not stored:
            in_force = "no policy: the defaults (strategy dynamic, rebalance allow)"
        elif view["expired"]:
            in_force = "expired: ignored, the defaults apply (strategy dynamic, rebalance allow)"
        else:
            in_force = f"{policy.fee_text()}; rebalance {policy.rebalance}"
        view.update(stored=stored, in_force=in_force,
                    channels=sorted(c.short_channel_id for c in channels if c.peer_id == policy.peer_id))
        return view

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
    def on_forward_event(self, payload: Any) -> int:
        """Stores a settled or local_failed forward as it happens; the marks are left to the
        pages.

        A malformed event is not stored: one warning names the bad field. A stored live
        row never outranks the node's: the next listforwards page replaces it if they differ.
        """
        if self.db is None:
            return 0
        forward = check_forward_event(payload)
        if isinstance(forward, Rejected):
            self.log(f"forward_event not stored: {forward}", "warn")
            return 0
        if not (forward.is_settled or forward.status == LOCAL_FAILED):
            return 0
        return self.db.store_forwards([forward])

    # --- status ----------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        return {
            "version": __version__,
            "phase": self.phase,
            "uptime_seconds": int(self.clock() - self.started_at),
            "dry_run": self.config.dry_run,
            "startup_error": self.startup_error,
            "options": option_values(self.config),
            "loops": self.scheduler.stats(),
            "database": self._database_status(),
            "sling": self.sling.status() if self.sling else {"loaded": False},
            "startup_hygiene": self.hygiene.to_dict() if self.hygiene else None,
            "rebalancing": self._rebalancing_status(),
            "fees": self.fees.last_result if self.fees else None,
            "channels": {"count": len(self.channels),
                         "active": sum(1 for c in self.channels if c.is_active),
                         "by_flow_state": self.flow.counts_by_state() if self.flow else None},
            "metrics": self.metrics.status() if self.metrics else {"enabled": False},
        }

    def _database_status(self) -> Dict[str, Any]:
        db = self.db
        database: Dict[str, Any] = {"path": self.config.db_path}
        if db is None:
            return database
        database["problem"] = db.problem()
        try:
            database.update({
                "schema_version": db.schema_version(),
                "forwards_rows": db.forwards_count(),
                "high_water_mark": {"created_index": db.get_mark(CREATED),
                                    "updated_index": db.get_mark(UPDATED)},
            })
        except (DatabaseGone, sqlite3.Error) as e:   # the problem above says why
            database["problem"] = database["problem"] or f"cannot read the database: {e}"
            database.update({"schema_version": None, "forwards_rows": None, "high_water_mark": None})
        database["file_size_bytes"] = db.file_size_bytes()
        database["hydration"] = self.hydration.to_dict() if self.hydration else None
        return database

    def _rebalancing_status(self) -> Optional[Dict[str, Any]]:
        if self.rebalancer is None:
            return None
        try:
            return self.rebalancer.status(self.clock())
        except (DatabaseGone, sqlite3.Error) as e:
            return {"error": f"cannot read the budget and jobs: {e}"}

    # --- shutdown --------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        if self.metrics is not None:
            self.metrics.stop()
        self.scheduler.stop()
        # the start-up thread may be inside the database (hydration): it stops after the page
        # under way, and the database is closed only once it is out (or, hung on an RPC, after
        # the RPC's timeout)
        if self._startup_thread is not None and self._startup_thread is not threading.current_thread():
            self._startup_thread.join(self.config.rpc_timeout_seconds + 5)
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


def with_fees_set(channels: List[Channel], decisions: List[Dict[str, Any]], fee_base_msat: int) -> List[Channel]:
    """The channels after a fee cycle: each fee (and max-HTLC) it applied, without asking
    the node again."""
    applied = {d["short_channel_id"]: d for d in decisions if d["applied"]}

    def after(c: Channel, d: Dict[str, Any]) -> Channel:
        htlc = d.get("new_htlc_max_msat")
        return dataclasses.replace(c, fee_ppm=d["new_fee_ppm"], fee_base_msat=fee_base_msat,
                                   htlc_maximum_msat=c.htlc_maximum_msat if htlc is None else htlc)
    return [after(c, applied[c.short_channel_id]) if c.short_channel_id in applied else c for c in channels]


def flow_view(flow) -> Dict[str, Any]:
    """A ChannelFlow as operators read it: sats for volumes, msat kept for fees."""
    return {"short_channel_id": flow.short_channel_id, "state": flow.state,
            "flow_ratio": round(flow.flow_ratio, 3),
            "daily_volume_sats": flow.daily_volume_msat // 1000,
            "daily_out_sats": flow.daily_out_msat // 1000,
            "in_sats": flow.in_msat // 1000, "out_sats": flow.out_msat // 1000,
            "fees_earned_msat": flow.fees_earned_msat,
            "in_count": flow.in_count, "out_count": flow.out_count,
            # refused here for lack of outbound balance: sales this channel could not make
            "unmet_count": flow.unmet_count, "unmet_sats": flow.unmet_msat // 1000,
            "updated_at": flow.updated_at}
