"""Sling job lifecycle: start-up hygiene (spec feature 15) and the jobs we run.

Every job reserves its worst-case fee in the budget ledger before sling sees it, and
is reconciled to the fee actually paid when it ends, so the daily budget holds even
when an automatic pass and a manual `revenue-rebalance` run at the same time.
"""
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Set

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


def cleanup_orphans(node: NodeAdapter, sling_loaded: bool, log: Log, dry_run: bool = False) -> HygieneResult:
    """Deletes every sling job left from an earlier run, so no old job spends behind our back.

    In dry-run the plugin changes nothing: the jobs are counted and left alone.
    """
    if not sling_loaded:
        log("sling plugin not loaded: rebalancing is disabled (fees and flow analysis carry on)", "warn")
        return HygieneResult(sling_loaded=False)
    result = HygieneResult(sling_loaded=True)
    try:
        jobs = node.sling_jobs()
        result.orphans_found = len(jobs)
        if dry_run:
            log(f"Startup Hygiene: dry-run, left {len(jobs)} sling jobs alone.", "info")
            return result
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
        # Channels where a sling call failed or timed out (scid -> when): sling may still hold
        # a job there that no longer has a reservation (a failed stop or delete, or a timed-out
        # sling-job that lands late). Each watch removes such a job until none shows up.
        self.loose: Dict[str, float] = {}

    @property
    def has_loose_jobs(self) -> bool:
        return bool(self.loose)

    def start(self, plan: JobPlan, now: float) -> int:
        """Reserves the worst-case fee, then creates and starts the sling job."""
        # sling's stats are per channel: read the starting point before anything can move.
        baseline = self.node.sling_totals(plan.scid)
        job = {"scid": plan.scid, "amount_msat": plan.amount_msat, "chunk_sats": plan.chunk_sats,
               "max_ppm": plan.max_ppm, "candidates": plan.candidates,
               "target": plan.sling_target(), "manual": plan.manual, "baseline": baseline.to_dict()}
        job_id = self.db.start_job_reserving(job, plan.reserve_msat, self.budget_fits, now)
        if job_id is None:
            raise BudgetExhausted(f"daily budget cannot cover the worst-case fee of "
                                  f"{plan.reserve_msat / 1000:g} sat for {plan.scid}")
        try:
            self.node.sling_create_job(plan.scid, plan.chunk_sats, plan.max_ppm,
                                       plan.candidates, plan.sling_target(), plan.source_floor_sats())
            self.node.sling_go(plan.scid)
        except NodeError as e:
            self.loose[plan.scid] = now   # a timed-out call may still create or start the job
            self._forget_sling_job(plan.scid, now)
            # sling-go may have started before failing: charge what it may have spent.
            self.db.end_job(job_id, "failed", f"sling refused the job: {e.message}", 0,
                            0 if e.method == "sling-job" else plan.reserve_msat, 0, now)
            raise
        self.db.mark_job_running(job_id)
        self.log(f"Rebalance job {job_id}: pulling {plan.amount_msat // 1000} sat into {plan.scid}"
                 f" from {','.join(plan.candidates)} at most {plan.max_ppm} ppm", "info")
        return job_id

    def watch(self, channels: Optional[Dict[str, Channel]], now: float) -> List[Dict[str, Any]]:
        """Checks every running job; ends those done, timed out, over budget or closed.

        channels None: not known this time (the listing failed); only sling is asked.
        """
        ended = []
        jobs = self.db.running_jobs()
        try:
            in_sling = set(self.node.sling_jobs()) if jobs or self.loose else set()
        except NodeError:
            in_sling = None   # unknown: the stats below still guard each job
        for job in jobs:
            channel = channels.get(job["scid"]) if channels is not None else UNKNOWN
            if in_sling is not None and job["scid"] not in in_sling:
                # Removed behind our back (sling-deletejob, a sling restart): what it spent
                # may be gone from the stats too, so the whole reservation is charged.
                gone = SlingTotals(job["moved_msat"], job["reserved_msat"], 0, job["failures"])
                ended.append(self._finish(job, gone, "vanished", "the sling job was removed outside"
                                          " the plugin; charged the full reservation", now))
                continue
            try:
                progress = self._progress(job)
            except NodeError as e:
                # Blind: the budget cannot be enforced on a job we cannot see, so it stops,
                # and the whole reservation is charged since what sling spent is unknown.
                status, reason = (job_verdict(job, None, channel, self.config, now)
                                  or ("blind", f"sling's stats could not be read ({e.message})"))
                self.log(f"Rebalance job {job['id']}: cannot read sling stats: {e}", "warn")
                blind = SlingTotals(job["moved_msat"], job["reserved_msat"], 0, job["failures"])
                ended.append(self._finish(job, blind, status, reason + "; charged the full reservation", now))
                continue
            verdict = job_verdict(job, progress, channel, self.config, now)
            if verdict is None:
                self.db.update_job_progress(job["id"], progress.moved_msat, progress.fee_paid_msat,
                                            progress.failures)
                continue
            ended.append(self._finish(job, progress, verdict[0], verdict[1], now))
        if in_sling is not None:
            self._remove_loose_jobs(in_sling, now)
        return ended

    def _remove_loose_jobs(self, in_sling: Set[str], now: float) -> None:
        """Removes sling jobs the plugin no longer runs, on channels where a sling call failed:
        left running they would spend outside the budget. A channel is let go once sling has
        shown no job there for longer than two RPC timeouts (a late sling-job has landed)."""
        running = {job["scid"] for job in self.db.running_jobs()}
        for scid, since in list(self.loose.items()):
            if scid in running:
                continue
            if scid in in_sling:
                self.log(f"sling still runs a job on {scid} that the plugin ended or never started;"
                         " removing it", "warn")
                self.loose[scid] = now
                self._forget_sling_job(scid, now)
            elif now - since > 2 * self.config.rpc_timeout_seconds:
                del self.loose[scid]

    def stop_all(self, reason: str, now: float) -> int:
        """Stops every job we started (shutdown, or jobs left by a crash found at start-up):
        sling must not spend behind our back, and their reservations are reconciled."""
        jobs = self.db.running_jobs()
        for job in jobs:
            try:
                progress = self._progress(job)
            except NodeError:   # unknown spend: charge the whole reservation
                progress = SlingTotals(job["moved_msat"], job["reserved_msat"], 0, job["failures"])
            self._finish(job, progress, "stopped", reason, now)
        for scid in list(self.loose):
            self._forget_sling_job(scid, now)
        return len(jobs)

    def _progress(self, job: Dict[str, Any]) -> SlingTotals:
        """What this job did: sling's channel totals now, less those when it started.

        sling's totals cover a rolling window; if any fell below the starting point, old
        rebalances left the window (or the stats were deleted) and the difference says
        nothing: the whole reservation is charged then, and the job is stopped.
        """
        now_totals = self.node.sling_totals(job["scid"])
        base = job["baseline"]
        fields = ("moved_msat", "fee_paid_msat", "successes", "failures")
        if any(getattr(now_totals, f) < base.get(f, 0) for f in fields):
            return SlingTotals(job["moved_msat"], job["reserved_msat"], 0, job["failures"], reliable=False)
        return SlingTotals(*(getattr(now_totals, f) - base.get(f, 0) for f in fields))

    def _finish(self, job: Dict[str, Any], progress: SlingTotals, status: str, reason: str,
                now: float) -> Dict[str, Any]:
        self._forget_sling_job(job["scid"], now)
        self.db.end_job(job["id"], status, reason, progress.moved_msat, progress.fee_paid_msat,
                        progress.failures, now)
        if progress.moved_msat == 0 and status in ("timeout", "stopped_failing"):
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

    def _forget_sling_job(self, scid: str, now: float) -> None:
        for step in (self.node.sling_stop, self.node.sling_delete_job):
            try:
                step(scid)
            except NodeError as e:
                self.loose[scid] = now   # the next watch tries again
                self.log(f"sling: {e}", "debug")


UNKNOWN = object()   # the channel's state could not be read this time


def job_verdict(job: Dict[str, Any], progress: Optional[SlingTotals], channel: Any,
                config, now: float) -> Optional[tuple]:
    """Pure: (status, reason) when the job should end now, else None.

    progress None: sling's stats could not be read; channel UNKNOWN: nor the channel's.
    A job stops *before* its next payment could take the fees past its reservation.
    """
    if channel is None or (channel is not UNKNOWN and not channel.is_active):
        return "closed", "the channel is no longer open"
    if now - job["started_at"] >= config.rebalance_job_timeout_minutes * 60:
        return "timeout", f"not done after {config.rebalance_job_timeout_minutes} minutes"
    if progress is None:
        return None
    if not progress.reliable:
        return "stats_reset", "sling's stats fell below the job's starting point"
    chunk_msat = job["chunk_sats"] * 1000
    if progress.moved_msat + chunk_msat > job["amount_msat"]:
        return "done", f"moved {progress.moved_msat // 1000} sat of {job['amount_msat'] // 1000}"
    if channel is not UNKNOWN and channel.local_msat >= job["target"] * channel.capacity_msat:
        return "done", "the channel reached its target balance"
    next_payment_fee = -(-chunk_msat * job["max_ppm"] // 1_000_000)
    if progress.fee_paid_msat + next_payment_fee > job["reserved_msat"]:
        return "budget", "one more payment could take the fees past the job's reservation"
    if progress.failures >= config.futility_max_failures and progress.moved_msat == 0:
        return "stopped_failing", f"{progress.failures} failed attempts and nothing moved"
    return None
