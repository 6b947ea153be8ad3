"""Sling's presence, as the loops see it, and what the plugin does when sling appears.

sling may be loaded before the plugin, after it, or restarted under it. Whenever it is
found (at start-up, or by the job watch's cheap `plugin list` every few seconds), before
any job may start: start-up hygiene (no sling job runs that is not ours), the jobs left
open in our database are stopped and reconciled, and an empty budget ledger is rebuilt
from sling's stats (a lost database must not let the plugin spend the day's budget twice).
Until all of that succeeded, rebalancing waits, with the reason in revenue-status.

It keeps what it learnt (loaded, adopted, hygiene, rebuild, sling's jobs) for
revenue-status, which makes no RPC call of its own.
"""
import sqlite3
import threading
from typing import Any, Callable, Dict, List, Optional

from modules.budget import outside_spend
from modules.database import BUDGET_WINDOW_SECONDS
from modules.db_file import DatabaseGone
from modules.job_manager import HygieneResult, cleanup_orphans
from modules.node import NodeError

Log = Callable[[str, str], None]
REBUILD_ATTEMPTS = 3    # tries at reading sling's stats before the whole budget counts as spent


class SlingLink:
    def __init__(self, node, db, rebalancer, config, log: Log, clock: Callable[[], float]):
        self.node = node
        self.db = db
        self.rebalancer = rebalancer
        self.config = config
        self.log = log
        self.clock = clock
        self.loaded = False                      # per the last `plugin list` that answered
        self.ready = False                       # arrival duties done while it stays loaded
        self.problem: Optional[str] = None       # why rebalancing waits, when loaded and not ready
        self.hygiene: Optional[HygieneResult] = None
        self.ledger_rebuild: Optional[Dict[str, Any]] = None
        self.checked_at: Optional[float] = None
        self.arrivals = 0
        self._rebuild_failures = 0
        self._lock = threading.Lock()

    def refresh(self, plugins: Optional[List[str]]) -> bool:
        """Takes the plugin list (None: it could not be read; what we knew stands) and, when
        sling is newly there, does the arrival duties. Returns whether jobs may start."""
        with self._lock:
            if plugins is None:
                return self.ready
            self.checked_at = self.clock()
            if "sling" not in plugins:
                if self.loaded or self.hygiene is None:
                    self.hygiene = cleanup_orphans(self.node, False, self.log)   # logs "not loaded"
                self.loaded = self.ready = False
                self.problem = None
                return False
            self.loaded = True
            if not self.ready:
                self.ready = self._arrive()
            return self.ready

    @property
    def refusal(self) -> Optional[str]:
        """Why no job may start now, or None."""
        if not self.loaded:
            return "sling plugin not loaded: rebalancing is disabled"
        if not self.ready:
            return f"sling is loaded but not ready: {self.problem}; retried on the next job watch"
        return None

    def _arrive(self) -> bool:
        self.arrivals += 1
        self.problem = "just found: start-up hygiene and the budget ledger check under way"
        with self.rebalancer.exclusive():    # no job starts before this is done
            self.hygiene = cleanup_orphans(self.node, True, self.log, self.config.dry_run)
            if self.hygiene.error:
                self.problem = f"start-up hygiene failed: {self.hygiene.error}"
                return False
        leftover = self.rebalancer.reconcile_open("still open when sling was found (plugin or sling"
                                                  " restarted)", self.clock())
        if leftover:
            self.log(f"Reconciled {len(leftover)} rebalance jobs left open by an earlier run", "info")
        with self.rebalancer.exclusive():
            try:
                self._rebuild_ledger()
            except NodeError as e:
                self.problem = f"cannot rebuild the budget ledger from sling's stats ({e})"
                self.log(f"Budget ledger: {self.problem}", "warn")
                return False
        self.problem = None
        return True

    def _rebuild_ledger(self) -> None:
        """An empty ledger next to a sling that has paid in the last 24 h: the database was
        lost (or is new). What those payments may have cost counts as spent from now."""
        if not self.db.ledger_is_empty():
            return
        now = self.clock()
        spends, unreadable = [], []
        try:
            scids = [c.short_channel_id for c in self.node.list_channels()]
            for scid in scids:
                try:
                    spend = self.node.sling_spend(scid)
                    spends.append((scid, spend.fee_bound_msat, spend.last_rebalance))
                except NodeError:
                    unreadable.append(scid)
            if unreadable:
                raise NodeError("sling-stats", None, f"unreadable for {len(unreadable)} channels")
        except NodeError:
            self._rebuild_failures += 1
            if self._rebuild_failures < REBUILD_ATTEMPTS:
                raise
            unreadable = unreadable or ["(channel list)"]
        limit_msat = self.config.daily_budget_sats * 1000
        counted_msat, why = outside_spend(spends, unreadable, limit_msat, BUDGET_WINDOW_SECONDS, now)
        self.ledger_rebuild = {"time": now, "counted_sats": -(-counted_msat // 1000), "reason": why}
        if counted_msat:
            self.db.record_outside_spend(counted_msat, now)
            self.log(f"Budget ledger was empty: {why} (for 24 h)", "warn")
        else:
            self.log(f"Budget ledger is empty and {why}", "info")

    def status(self) -> Dict[str, Any]:
        """Kept state only: no RPC."""
        if not self.loaded:
            return {"loaded": False, "jobs": 0, "rebalancing": "disabled: sling plugin not loaded",
                    "checked_at": self.checked_at}
        try:
            jobs: Optional[int] = len(self.db.running_jobs())
        except (DatabaseGone, sqlite3.Error):   # said under "database"; status still answers
            jobs = None
        return {"loaded": True, "jobs": jobs,
                "rebalancing": "enabled" if self.ready else f"waiting: {self.problem}",
                "checked_at": self.checked_at, "ledger_rebuild": self.ledger_rebuild}
