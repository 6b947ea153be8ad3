"""Sling job lifecycle: start-up hygiene (spec feature 15) and the jobs we run.

Every job reserves its worst-case fee in the budget ledger before sling sees it, and
is reconciled to the fee actually paid when it ends, so the daily budget holds even
when an automatic pass and a manual `revenue-rebalance` run at the same time.
"""
import dataclasses
from typing import Any, Callable, Dict, List, Optional

from modules.models import Channel
from modules.node import NodeAdapter, NodeError, SlingTotals

Log = Callable[[str, str], None]


@dataclasses.dataclass
class HygieneResult:
    sling_loaded: bool
    orphans_found: int = 0
    orphans_deleted: int = 0
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cleanup_orphans(node: NodeAdapter, sling_loaded: bool, log: Log) -> HygieneResult:
    """Deletes every sling job left from an earlier run, so no old job spends behind our back."""
    if not sling_loaded:
        log("sling plugin not loaded: rebalancing is disabled (fees and flow analysis carry on)", "warn")
        return HygieneResult(sling_loaded=False)
    result = HygieneResult(sling_loaded=True)
    try:
        jobs = node.sling_jobs()
        result.orphans_found = len(jobs)
        for scid in jobs:
            try:
                node.sling_delete_job(scid)
                result.orphans_deleted += 1
            except NodeError as e:
                result.error = str(e)
                log(f"Startup Hygiene: could not delete sling job {scid}: {e}", "warn")
    except NodeError as e:
        result.error = str(e)
        log(f"Startup Hygiene: could not list sling jobs: {e}", "warn")
    log(f"Startup Hygiene: Terminated {result.orphans_deleted} orphan sling jobs.", "info")
    return result


@dataclasses.dataclass
class JobPlan:
    """What the rebalancer decided to run: a pull into `scid` from `candidates`."""
    scid: str
    amount_msat: int
    chunk_sats: int
    max_ppm: int
    reserve_msat: int              # worst-case fee, one chunk in flight included
    candidates: List[str]
    target_local_msat: int
    capacity_msat: int
    source_floor_msat: int = 0     # no candidate is drawn below this
    manual: bool = False

    def source_floor_sats(self) -> int:
        # sling checks the floor before each payment: keep a chunk of headroom above it.
        return -(-(self.source_floor_msat + self.chunk_sats * 1000) // 1000)

    def sling_target(self) -> float:
        """sling idles once our side reaches target * capacity: stop where we planned."""
        return round(min(0.99, max(0.01, self.target_local_msat / self.capacity_msat)), 4)


class BudgetExhausted(Exception):
    pass


class JobManager:
    """Starts sling jobs, watches them each rebalance cycle, ends and records them."""

    def __init__(self, node: NodeAdapter, db, config, log: Log,
                 budget_fits: Callable[[int, int, int], bool]):
        self.node = node
        self.db = db
        self.config = config
        self.log = log
        self.budget_fits = budget_fits

    def start(self, plan: JobPlan, now: float) -> int:
        """Reserves the worst-case fee, then creates and starts the sling job."""
        job = {"scid": plan.scid, "amount_msat": plan.amount_msat, "chunk_sats": plan.chunk_sats,
               "max_ppm": plan.max_ppm, "candidates": plan.candidates,
               "target": plan.sling_target(), "manual": plan.manual}
        job_id = self.db.start_job_reserving(job, plan.reserve_msat, self.budget_fits, now)
        if job_id is None:
            raise BudgetExhausted(f"daily budget cannot cover the worst-case fee of "
                                  f"{plan.reserve_msat / 1000:g} sat for {plan.scid}")
        try:
            baseline = self.node.sling_totals(plan.scid)
            self.node.sling_create_job(plan.scid, plan.chunk_sats, plan.max_ppm,
                                       plan.candidates, plan.sling_target(), plan.source_floor_sats())
            self.node.sling_go(plan.scid)
        except NodeError as e:
            self._forget_sling_job(plan.scid)
            self.db.end_job(job_id, "failed", f"sling refused the job: {e.message}", 0, 0, 0, now)
            raise
        self.db.mark_job_running(job_id, baseline.to_dict())
        self.log(f"Rebalance job {job_id}: pulling {plan.amount_msat // 1000} sat into {plan.scid}"
                 f" from {','.join(plan.candidates)} at most {plan.max_ppm} ppm", "info")
        return job_id

    def watch(self, channels: Dict[str, Channel], now: float) -> List[Dict[str, Any]]:
        """Checks every running job; ends those done, timed out, over budget or closed."""
        ended = []
        for job in self.db.running_jobs():
            try:
                progress = self._progress(job)
            except NodeError as e:
                self.log(f"Rebalance job {job['id']}: cannot read sling stats: {e}", "warn")
                continue
            verdict = job_verdict(job, progress, channels.get(job["scid"]), self.config, now)
            if verdict is None:
                self.db.update_job_progress(job["id"], progress.moved_msat, progress.fee_paid_msat,
                                            progress.failures)
                continue
            ended.append(self._finish(job, progress, verdict[0], verdict[1], now))
        return ended

    def stop_all(self, reason: str, now: float) -> int:
        """Stops every job we started (shutdown, or jobs left by a crash found at start-up):
        sling must not spend behind our back, and their reservations are reconciled."""
        jobs = self.db.running_jobs()
        for job in jobs:
            try:
                progress = self._progress(job)
            except NodeError:
                progress = SlingTotals(job["moved_msat"], job["fee_paid_msat"], 0, job["failures"])
            self._finish(job, progress, "stopped", reason, now)
        return len(jobs)

    def _progress(self, job: Dict[str, Any]) -> SlingTotals:
        if job["status"] != "running":
            return SlingTotals()
        now_totals = self.node.sling_totals(job["scid"])
        base = job["baseline"]
        return SlingTotals(
            moved_msat=max(0, now_totals.moved_msat - base.get("moved_msat", 0)),
            fee_paid_msat=max(0, now_totals.fee_paid_msat - base.get("fee_paid_msat", 0)),
            successes=max(0, now_totals.successes - base.get("successes", 0)),
            failures=max(0, now_totals.failures - base.get("failures", 0)))

    def _finish(self, job: Dict[str, Any], progress: SlingTotals, status: str, reason: str,
                now: float) -> Dict[str, Any]:
        self._forget_sling_job(job["scid"])
        self.db.end_job(job["id"], status, reason, progress.moved_msat, progress.fee_paid_msat,
                        progress.failures, now)
        if progress.moved_msat == 0 and status in ("timeout", "budget", "stopped_failing"):
            # Each failed attempt counts toward the futility breaker; a silent job counts once.
            attempts = max(1, progress.failures)
            self.db.record_failure(job["scid"], "destination", now, attempts)
            for source in job["candidates"]:
                self.db.record_failure(source, "source", now, attempts)
        elif progress.moved_msat > 0:
            self.db.clear_failures(job["scid"], "destination")
        self.log(f"Rebalance job {job['id']} on {job['scid']} ended ({status}: {reason}); moved "
                 f"{progress.moved_msat // 1000} sat for {progress.fee_paid_msat // 1000} sat in fees", "info")
        return {"job_id": job["id"], "scid": job["scid"], "status": status, "reason": reason,
                "moved_sats": progress.moved_msat // 1000, "fee_paid_sats": progress.fee_paid_msat // 1000}

    def _forget_sling_job(self, scid: str) -> None:
        for step in (self.node.sling_stop, self.node.sling_delete_job):
            try:
                step(scid)
            except NodeError as e:
                self.log(f"sling: {e}", "debug")


def job_verdict(job: Dict[str, Any], progress: SlingTotals, channel: Optional[Channel],
                config, now: float) -> Optional[tuple]:
    """Pure: (status, reason) when the job should end now, else None."""
    if channel is None or not channel.is_active:
        return "closed", "the channel is no longer open"
    if progress.moved_msat >= job["amount_msat"]:
        return "done", f"moved {progress.moved_msat // 1000} sat of {job['amount_msat'] // 1000}"
    if channel.local_msat >= job["target"] * channel.capacity_msat:
        return "done", "the channel reached its target balance"
    if progress.fee_paid_msat >= job["reserved_msat"]:
        return "budget", "fees paid reached the job's reserved worst case"
    if progress.failures >= config.futility_max_failures and progress.moved_msat == 0:
        return "stopped_failing", f"{progress.failures} failed attempts and nothing moved"
    if now - job["started_at"] >= config.rebalance_job_timeout_minutes * 60:
        return "timeout", f"not done after {config.rebalance_job_timeout_minutes} minutes"
    return None
