"""The rebalance pass: watch running jobs, plan, start what pays, record every verdict.

Thin by design: the decisions are pure (modules/rebalance_decisions.py, modules/budget.py),
the sling jobs belong to the JobManager, the SQL to the database. This module reads
their inputs, applies the safety rules an operator counts on (sling loaded, wallet
reserve, budget, futility breaker, dry-run) and records what happened.
"""
import contextlib
import json
import re
import threading
from typing import Any, Dict, Iterator, List, Mapping, Optional

from modules.budget import budget_rule, wallet_reserve_ok
from modules.database import BUDGET_WINDOW_SECONDS
from modules.errors import REBALANCE_REFUSED, UserError
from modules.job_manager import BudgetExhausted, JobManager, JobPlan
from modules.models import Channel, ChannelFlow
from modules.node import NodeAdapter, NodeError
from modules.policy import PeerPolicy, rebalance_exclusions
from modules.rebalance_decisions import (FUTILITY_REASON, DemandOutlook, RebalanceDecision, plan_rebalances,
                                        prune_failures)

SCID_RE = re.compile(r"^\d+x\d+x\d+$")
DESTINATION, SOURCE = "destination", "source"


class Rebalancer:
    def __init__(self, node: NodeAdapter, db, config, log):
        self.node = node
        self.db = db
        self.config = config
        self.log = log
        # the limit is read at each reservation: it may change at runtime (setconfig)
        self.jobs = JobManager(node, db, config, log, lambda spent, reserved, amount: budget_rule(
            self.config.daily_budget_sats * 1000)(spent, reserved, amount))
        # The loop and a manual revenue-rebalance take turns; the budget itself is also
        # reserved atomically in the database, so even without this it could not overspend.
        self._pass_lock = threading.Lock()
        self.closed = False

    # --- the pass ----------------------------------------------------------------
    def run_pass(self, channels: List[Channel], flows: Dict[str, ChannelFlow], sling_loaded: bool,
                 now: float, scid: Optional[str] = None, amount_sats: Optional[int] = None,
                 force: bool = False, sling_problem: Optional[str] = None,
                 outlooks: Optional[Dict[str, DemandOutlook]] = None,
                 policies: Optional[Mapping[str, PeerPolicy]] = None) -> Dict[str, Any]:
        """One pass over every channel (automatic) or one channel (manual, scid given).

        sling_loaded: sling is there and adopted (hygiene done, ledger checked); when it is
        not, `sling_problem` says why (default: not loaded). `outlooks`: the fee controller's
        demand outlook per channel, which values refills. `policies`: peer id -> its active
        policy, which may keep a channel out of either role."""
        with self._pass_lock:
            if self.closed:
                raise UserError("cl-revenue-ops is shutting down", REBALANCE_REFUSED)
            return self._run_pass(channels, flows, sling_loaded, now, scid, amount_sats, force,
                                  sling_problem, outlooks or {}, policies or {})

    def budget_available_msat(self, now: float) -> int:
        spent, reserved = self.db.budget_usage(now)
        return max(0, self.config.daily_budget_sats * 1000 - spent - reserved)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """No pass, watch or job start runs meanwhile (sling's arrival duties)."""
        with self._pass_lock:
            yield

    def reconcile_open(self, reason: str, now: float) -> List[Dict[str, Any]]:
        with self._pass_lock:
            return [] if self.closed else self.jobs.reconcile_open(reason, now)

    def watch(self, channels: Optional[List[Channel]], now: float) -> List[Dict[str, Any]]:
        """The frequent check of running jobs (amount, budget, timeout, channel closed)."""
        with self._pass_lock:
            if self.closed or not self.db.running_jobs():
                return []
            by_scid = None if channels is None else {c.short_channel_id: c for c in channels}
            return self.jobs.watch(by_scid, now)

    def shutdown(self, now: float, timeout: float) -> int:
        """Waits for a pass in progress (it may be starting a job), then stops every job."""
        acquired = self._pass_lock.acquire(timeout=timeout)
        try:
            self.closed = True
            return self.jobs.stop_all("plugin shutdown", now)
        finally:
            if acquired:
                self._pass_lock.release()

    def _run_pass(self, channels, flows, sling_loaded, now, scid, amount_sats, force,
                  sling_problem, outlooks, policies) -> Dict[str, Any]:
        manual = scid is not None
        by_scid = {c.short_channel_id: c for c in channels}
        no_source, no_destination = rebalance_exclusions(channels, policies)
        if manual:
            self._check_request(scid, amount_sats, by_scid)
            if scid in no_destination:
                raise UserError(f"{scid} may not be rebalanced into: {no_destination[scid]} "
                                f"(revenue-policy get {by_scid[scid].peer_id})", REBALANCE_REFUSED)
        refusal = self._refusal(sling_loaded, sling_problem)
        if refusal and manual:   # refused before anything is touched
            raise UserError(refusal, REBALANCE_REFUSED)
        ended = self.jobs.watch(by_scid, now) if sling_loaded else []
        self._prune_failures(by_scid)
        if refusal:
            return {"ran": False, "reason": refusal, "ended": ended, "decisions": []}
        running = self.db.running_jobs()
        busy = {j["scid"] for j in running}
        if manual and scid in busy:
            raise UserError(f"a rebalance job is already running for {scid}", REBALANCE_REFUSED)
        spent, reserved = self.db.budget_usage(now)
        available = max(0, self.config.daily_budget_sats * 1000 - spent - reserved)
        if manual and available <= 0:
            raise UserError(f"daily rebalance budget exhausted: {spent // 1000} sat spent and "
                            f"{reserved // 1000} sat reserved of {self.config.daily_budget_sats} sat",
                            REBALANCE_REFUSED)
        decisions = plan_rebalances(
            [c for c in channels if c.is_active], flows,
            {c.short_channel_id: c.fee_ppm for c in channels}, self.db.failures(DESTINATION),
            self.config, now, sources_exclude=busy | {s for j in running for s in j["candidates"]},
            destinations_exclude=busy, only_scids=[scid] if manual else None,
            amount_msat=amount_sats * 1000 if amount_sats else None, force=force,
            budget_available_msat=available, outlooks=outlooks, no_source=no_source,
            no_destination=no_destination)
        if manual and decisions and not decisions[0].start:
            budget_reason = next((r for r in decisions[0].reasons if r.startswith("budget")), None)
            if budget_reason:
                raise UserError(f"daily rebalance budget too small for {scid}: {budget_reason}",
                                REBALANCE_REFUSED)
        started = self._start(decisions, by_scid, manual, now)
        self._record(decisions, started, now)
        result = {"ran": True, "dry_run": self.config.dry_run, "ended": ended,
                  "started": started, "decisions": [decision_view(d) for d in decisions]}
        if manual:
            result["decision"] = result["decisions"][0]
        return result

    def _check_request(self, scid: str, amount_sats: Optional[int], by_scid: Dict[str, Channel]) -> None:
        if not isinstance(scid, str) or not SCID_RE.match(scid):
            raise UserError(f"malformed short channel id {scid!r}: expected BLOCKxTXxOUTPUT")
        channel = by_scid.get(scid)
        if channel is None:
            raise UserError(f"unknown channel {scid}: not among this node's channels")
        if not channel.is_active:
            raise UserError(f"channel {scid} is not open for payments (state {channel.state})")
        if amount_sats is not None:
            limit = self.config.rebalance_max_amount_sats
            if isinstance(amount_sats, bool) or not isinstance(amount_sats, int):
                raise UserError(f"amount_sats must be a whole number of sats, got {amount_sats!r}")
            if not 0 < amount_sats <= limit:
                raise UserError(f"amount_sats must be between 1 and {limit} (revenue-ops-rebalance-"
                                f"max-amount-sats), got {amount_sats}")

    def _refusal(self, sling_loaded: bool, sling_problem: Optional[str] = None) -> Optional[str]:
        if not sling_loaded:
            return sling_problem or "sling plugin not loaded: rebalancing is disabled"
        try:
            funds = self.node.funds_msat()
        except NodeError as e:
            return f"cannot read the wallet's funds: {e}"
        ok, reason = wallet_reserve_ok(funds["onchain_msat"], funds["channels_msat"], self.config)
        return None if ok else reason

    def _start(self, decisions: List[RebalanceDecision], by_scid: Dict[str, Channel], manual: bool,
               now: float) -> List[Dict[str, Any]]:
        started = []
        for d in decisions:
            if d.futility_blocked:
                self.log(f"{FUTILITY_REASON} Skipping {d.short_channel_id}.", "info")
            if not d.start:
                continue
            if self.config.dry_run:
                started.append({"scid": d.short_channel_id, "job_id": None, "dry_run": True})
                continue
            plan = JobPlan(d.short_channel_id, d.amount_msat, self.config.rebalance_chunk_sats, d.max_ppm,
                           d.reserve_msat, list(d.candidates), d.target_local_msat,
                           by_scid[d.short_channel_id].capacity_msat, d.source_floor_msat, manual)
            try:
                job_id = self.jobs.start(plan, now)
            except BudgetExhausted as e:
                if manual:
                    raise UserError(str(e), REBALANCE_REFUSED)
                self.log(f"rebalance of {d.short_channel_id} skipped: {e}", "info")
                continue
            except NodeError as e:
                if manual and e.code is None:
                    raise UserError(f"sling did not answer ({e.message}); the job is watched and its"
                                    f" reservation held", REBALANCE_REFUSED)
                if manual:
                    raise UserError(f"sling refused the job: {e.message}", REBALANCE_REFUSED)
                self.log(f"rebalance of {d.short_channel_id} not started: {e}", "warn")
                continue
            started.append({"scid": d.short_channel_id, "job_id": job_id, "amount_sats": d.amount_msat // 1000,
                            "max_ppm": d.max_ppm, "candidates": list(d.candidates)})
        return started

    def _record(self, decisions: List[RebalanceDecision], started: List[Dict[str, Any]], now: float) -> None:
        started_scids = {s["scid"] for s in started}
        rows = []
        for d in decisions:
            action = ("started" if d.short_channel_id in started_scids
                      else "planned" if d.start else "skipped" if d.role == DESTINATION else d.role)
            rows.append((d.short_channel_id, action, json.dumps(d.to_dict())))
        self.db.save_rebalance_decisions(rows, now)

    def _prune_failures(self, by_scid: Dict[str, Channel]) -> None:
        """Spec feature 19: failure counts of closed channels go."""
        for role in (SOURCE, DESTINATION):
            _, removed = prune_failures(self.db.failures(role), by_scid)
            if removed:
                self.db.delete_failures(removed, role)
                self.log(f"Pruned {role} failure counts of {len(removed)} closed channels", "debug")

    # --- status --------------------------------------------------------------------
    def status(self, now: float) -> Dict[str, Any]:
        """From the database and what the watch keeps: no RPC (answers while sling hangs)."""
        spent, reserved = self.db.budget_usage(now)
        outside_msat, outside_at = self.db.outside_spend(now)
        limit = self.config.daily_budget_sats * 1000
        budget = {"limit_sats": self.config.daily_budget_sats, "spent_24h_sats": spent // 1000,
                  "reserved_sats": reserved // 1000,
                  "available_sats": max(0, limit - spent - reserved) // 1000}
        if outside_msat:   # the ledger was rebuilt from sling's stats (a lost database)
            budget["counted_from_sling_stats_sats"] = -(-outside_msat // 1000)
            budget["counted_from_sling_stats_until"] = outside_at + BUDGET_WINDOW_SECONDS
        ending = dict(self.jobs.ending)
        return {
            "budget": budget,
            "active_jobs": [{"job_id": j["id"], "scid": j["scid"], "amount_sats": j["amount_msat"] // 1000,
                             "max_ppm": j["max_ppm"], "started_at": j["started_at"],
                             "moved_sats": j["moved_msat"] // 1000, "fee_paid_sats": j["fee_paid_msat"] // 1000,
                             "reserved_sats": j["reserved_msat"] / 1000, "candidates": j["candidates"],
                             "manual": j["manual"],
                             "stopping": ending[j["id"]][1] if j["id"] in ending else None}
                            for j in self.db.running_jobs()],
            "recent_jobs": self.db.recent_jobs(10),
        }


def decision_view(d: RebalanceDecision) -> Dict[str, Any]:
    view = d.to_dict()
    view["reasons"] = list(d.reasons)
    return view
