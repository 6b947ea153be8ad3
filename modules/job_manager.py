"""Sling job lifecycle: start-up hygiene (spec feature 15) and the jobs we run.

Every job reserves its worst-case fee in the budget ledger before sling sees it, and is
reconciled to the fee actually paid when it ends, so the daily budget holds even when an
automatic pass and a manual `revenue-rebalance` run at the same time.

Why `sling-once`, not `sling-job` + watching: a continuous sling job pays until its
channel reaches the target, one payment after another, and nothing the plugin checks
every few seconds can stop a payment sling completes between two checks (a fast route
pays several in one watch interval). `sling-once` carries the job's amount to sling
itself: sling counts each payment before making it (in-flight ones included, under a
lock) and stops once one more would pass the amount, and it never pays a route above
maxppm (effective ppm rounded up). So what a job can cost is at most amount * maxppm,
whatever the plugin sees or misses, even if the plugin or its database is gone. The
reservation is that plus one chunk: a payment sling stops waiting for
(WAITSENDPAY_TIMEOUT) may still settle without sling recording it, so such timeouts are
charged as paid, and the job is stopped before more of them than the spare chunk covers.

A job's cost is read from sling's per-channel stats (the difference from a reading taken
at its start). It is reconciled only when sling has confirmed the job no longer runs and
its stats could be read; until then its reservation is held and it is looked at again on
the next watch passes. Only when that stays impossible for BLIND_CHECKS checks is the
whole reservation charged (sling-once cannot spend more than it).
"""
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

from modules.models import Channel
from modules.node import SLING_IDLE_STATES, NodeAdapter, NodeError, SlingTotals

Log = Callable[[str, str], None]
BLIND_CHECKS = 4        # checks in a row a job's cost may stay unknown before it is charged in full
ABSENT_CHECKS = 2       # sling-once registers its task just after answering: look twice


@dataclasses.dataclass
class HygieneResult:
    sling_loaded: bool
    orphans_found: int = 0
    orphans_deleted: int = 0
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cleanup_orphans(node: NodeAdapter, sling_loaded: bool, log: Log, dry_run: bool = False) -> HygieneResult:
    """Deletes every sling job left from an earlier run, and every once-job still paying,
    so nothing spends behind our back. Jobs of ours still open in the database are
    reconciled after this (JobManager.reconcile_open).

    In dry-run the plugin changes nothing: the jobs are counted and left alone.
    """
    if not sling_loaded:
        log("sling plugin not loaded: rebalancing is disabled (fees and flow analysis carry on)", "warn")
        return HygieneResult(sling_loaded=False)
    result = HygieneResult(sling_loaded=True)
    try:
        orphans = set(node.sling_jobs())
        orphans |= {scid for scid, states in node.sling_tasks().items() if runs(states)}
        result.orphans_found = len(orphans)
        if dry_run:
            log(f"Startup Hygiene: dry-run, left {len(orphans)} sling jobs alone.", "info")
            return result
        for scid in sorted(orphans):
            try:
                node.sling_delete_job(scid)   # stops its tasks first
                result.orphans_deleted += 1
            except NodeError as e:
                result.error = str(e)
                log(f"Startup Hygiene: could not delete sling job {scid}: {e}", "warn")
    except NodeError as e:
        result.error = str(e)
        log(f"Startup Hygiene: could not list sling jobs: {e}", "warn")
    log(f"Startup Hygiene: Terminated {result.orphans_deleted} orphan sling jobs.", "info")
    return result


def runs(states: List[str]) -> bool:
    """Whether any of a channel's sling tasks may still pay."""
    return any(state not in SLING_IDLE_STATES for state in states)


@dataclasses.dataclass
class JobPlan:
    """What the rebalancer decided to run: a pull into `scid` from `candidates`."""
    scid: str
    amount_msat: int
    chunk_sats: int
    max_ppm: int
    reserve_msat: int              # worst-case fee: the amount and one chunk at max ppm
    candidates: List[str]
    target_local_msat: int
    capacity_msat: int
    source_floor_msat: int = 0     # no candidate is drawn below this
    manual: bool = False

    def source_floor_sats(self) -> int:
        # sling checks the floor before each payment: keep a chunk of headroom above it.
        return -(-(self.source_floor_msat + self.chunk_sats * 1000) // 1000)

    def once_total_sats(self) -> int:
        """What sling-once may move: the amount in whole chunks (sling wants a multiple)."""
        return self.amount_msat // (self.chunk_sats * 1000) * self.chunk_sats

    def sling_target(self) -> float:
        """The share of capacity at which the job is done (the watch ends it there)."""
        return round(min(0.99, max(0.01, self.target_local_msat / self.capacity_msat)), 4)


class BudgetExhausted(Exception):
    pass


class JobManager:
    """Starts sling once-jobs, watches them, ends and records them."""

    def __init__(self, node: NodeAdapter, db, config, log: Log,
                 budget_fits: Callable[[int, int, int], bool]):
        self.node = node
        self.db = db
        self.config = config
        self.log = log
        self.budget_fits = budget_fits
        self.ending: Dict[int, Tuple[str, str]] = {}   # job id -> (status, reason) decided, not settled
        self._unsettled: Dict[int, int] = {}           # job id -> checks in a row its cost stayed unknown
        self._absent: Dict[int, int] = {}              # job id -> checks in a row sling did not list it
        # sling-once got no answer: it may start whenever lightningd hands it to sling.
        # Until sling lists the job, it is charged in full if it ends.
        self._unconfirmed: set = set()

    def start(self, plan: JobPlan, now: float) -> int:
        """Reserves the worst-case fee, then hands sling the one-time job."""
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
            self.node.sling_once(plan.scid, plan.chunk_sats, plan.max_ppm, plan.once_total_sats(),
                                 plan.candidates, plan.source_floor_sats())
        except NodeError as e:
            if e.code is not None:
                # sling (or lightningd) refused it before starting anything: nothing spent.
                self.db.end_job(job_id, "failed", f"sling refused the job: {e.message}", 0, 0, 0, now)
            else:
                # No answer: the request may still reach sling, now or later. The job stays
                # open with its reservation; watched like any other once sling lists it, and
                # charged in full if it ends before that (a late start is then covered).
                self.db.mark_job_running(job_id)
                self._unconfirmed.add(job_id)
                self.log(f"Rebalance job {job_id}: sling-once did not answer ({e.message}); its"
                         f" reservation holds until sling shows the job", "warn")
            raise
        self.db.mark_job_running(job_id)
        self.log(f"Rebalance job {job_id}: pulling {plan.once_total_sats()} sat into {plan.scid}"
                 f" from {','.join(plan.candidates)} at most {plan.max_ppm} ppm", "info")
        return job_id

    def watch(self, channels: Optional[Dict[str, Channel]], now: float) -> List[Dict[str, Any]]:
        """Checks every open job; ends those done, timed out, over budget, closed or gone,
        once their cost is known. Stops sling tasks that run for no job of ours.

        channels None: not known this time (the listing failed); only sling is asked.
        """
        jobs = self.db.running_jobs()
        if not jobs:
            return []
        try:
            tasks: Optional[Dict[str, List[str]]] = self.node.sling_tasks()
        except NodeError as e:
            self.log(f"job watch: cannot list sling's tasks ({e})", "debug")
            tasks = None
        ended = [e for e in (self._check(job, channels, tasks, now) for job in jobs) if e]
        if tasks is not None:
            self.stop_strangers(tasks, {j["scid"] for j in jobs})
        return ended

    def stop_strangers(self, tasks: Dict[str, List[str]], ours: set) -> List[str]:
        """Deletes sling jobs that pay but are none of ours (not in dry-run)."""
        strangers = sorted(s for s, states in tasks.items() if s not in ours and runs(states))
        if self.config.dry_run:
            return []
        for scid in strangers:
            if self._stop_sling(scid):
                self.log(f"sling was running a job on {scid} the plugin did not start: deleted it", "warn")
        return strangers

    def reconcile_open(self, reason: str, now: float) -> List[Dict[str, Any]]:
        """Jobs left open by an earlier run (or from before sling went away): stopped and
        reconciled now, or on the next watch passes when sling cannot tell yet."""
        for job in self.db.running_jobs():
            self.ending.setdefault(job["id"], ("stopped", reason))
        return self.watch(None, now)

    def stop_all(self, reason: str, now: float) -> int:
        """Shutdown: stops every job we started and reconciles those whose cost sling can
        tell; the others keep their reservation until the next start reconciles them."""
        jobs = self.db.running_jobs()
        for job in jobs:
            self.ending.setdefault(job["id"], ("stopped", reason))
            stopped = self._stop_sling(job["scid"])
            try:
                progress = self._progress(job)
            except NodeError as e:
                self.log(f"Rebalance job {job['id']}: cost unknown at shutdown ({e}); its reservation"
                         f" stays until the next start", "warn")
                continue
            if stopped:
                self._finish(job, progress, *self.ending[job["id"]], now)
        return len(jobs)

    # --- one job --------------------------------------------------------------------
    def _check(self, job: Dict[str, Any], channels: Optional[Dict[str, Channel]],
               tasks: Optional[Dict[str, List[str]]], now: float) -> Optional[Dict[str, Any]]:
        job_id, scid = job["id"], job["scid"]
        channel = channels.get(scid) if channels is not None else UNKNOWN
        listed = None if tasks is None else tasks.get(scid)
        if listed is not None:
            self._unconfirmed.discard(job_id)
        self._absent[job_id] = self._absent.get(job_id, 0) + 1 if tasks is not None and listed is None else 0
        vanished = self._absent[job_id] >= ABSENT_CHECKS
        try:
            progress: Optional[SlingTotals] = self._progress(job, stats_may_be_gone=vanished)
            unknown_why = ""
        except NodeError as e:
            progress, unknown_why = None, f"sling's stats could not be read ({e.message})"
        verdict = self.ending.get(job_id)
        if verdict is None and vanished:
            verdict = ("vanished", "sling no longer has the job (sling restarted, or the job was"
                                   " deleted outside the plugin)")
        verdict = verdict or job_verdict(job, progress, channel, self.config, now)
        if verdict is None:
            if progress is None:   # sling-once keeps it within its reservation: look again
                return self._still_unknown(job, unknown_why, now)
            self._unsettled.pop(job_id, None)
            self.db.update_job_progress(job_id, progress.moved_msat, progress.fee_paid_msat, progress.failures)
            return None
        self.ending[job_id] = verdict
        stopped = self._stop_sling(scid) or vanished or (listed is not None and not runs(listed))
        if stopped and progress is not None:
            return self._finish(job, progress, verdict[0], verdict[1], now)
        return self._still_unknown(job, unknown_why or "sling did not confirm the job stopped", now)

    def _still_unknown(self, job: Dict[str, Any], why: str, now: float) -> Optional[Dict[str, Any]]:
        checks = self._unsettled[job["id"]] = self._unsettled.get(job["id"], 0) + 1
        if checks < BLIND_CHECKS:
            self.log(f"Rebalance job {job['id']}: {why}; its reservation holds, looking again", "warn")
            return None
        status, reason = self.ending.get(job["id"], ("blind", why))
        self._stop_sling(job["scid"])
        unknown = SlingTotals(job["moved_msat"], job["fee_paid_msat"], 0, job["failures"], reliable=False)
        return self._finish(job, unknown, status, f"{reason}; its cost stayed unknown for {checks} checks"
                            f" ({why})", now)

    def _progress(self, job: Dict[str, Any], stats_may_be_gone: bool = False) -> SlingTotals:
        """What this job did: sling's channel totals now, less those when it started.

        sling's totals cover a rolling window; if any fell below the starting point (or
        below what this job was already seen to do), old rebalances left the window or the
        stats were deleted, and the difference says nothing: reliable=False, and the whole
        reservation is charged. So too for a job sling no longer has when the channel's
        stats are empty: `sling-deletejob <scid> true` may have taken them.
        """
        now_totals = self.node.sling_totals(job["scid"])
        base = job["baseline"]
        fields = ("moved_msat", "fee_paid_msat", "successes", "failures")
        seen = {"moved_msat": job["moved_msat"], "fee_paid_msat": job["fee_paid_msat"],
                "successes": 0, "failures": job["failures"]}
        diff = {f: getattr(now_totals, f) - base.get(f, 0) for f in fields}
        gone = stats_may_be_gone and not any(getattr(now_totals, f) for f in fields)
        if gone or any(diff[f] < seen[f] for f in fields):
            return SlingTotals(job["moved_msat"], job["fee_paid_msat"], 0, job["failures"], reliable=False)
        # Timeouts since the start: at most what sling may list now less what it surely had.
        timeouts = max(0, min(diff["failures"], now_totals.timeouts_max - base.get("timeouts", 0)))
        # What it paid, at most: sling's rounded-down totals undone, and never above max ppm.
        fee_max = min(now_totals.fee_max_msat - base.get("fee_paid_msat", 0),
                      -(-(diff["moved_msat"] + 1000) * job["max_ppm"] // 1_000_000))
        return SlingTotals(**diff, timeouts=timeouts, timeouts_max=timeouts,
                           fee_max_msat=max(fee_max, diff["fee_paid_msat"]))

    def _finish(self, job: Dict[str, Any], progress: SlingTotals, status: str, reason: str,
                now: float) -> Dict[str, Any]:
        if job["id"] in self._unconfirmed:
            progress = dataclasses.replace(progress, reliable=False)
            reason += "; sling never showed the job sling-once did not answer for: it may yet start"
        charged = charge_msat(job, progress)
        if not progress.reliable:
            reason += "; charged the full reservation"
        elif progress.timeouts:
            reason += f"; {progress.timeouts} payments of unknown outcome charged at max ppm"
        self.db.end_job(job["id"], status, reason, progress.moved_msat, progress.fee_paid_msat,
                        progress.failures, now, charged_msat=charged, cost_known=progress.reliable)
        for table in (self.ending, self._unsettled, self._absent):
            table.pop(job["id"], None)
        self._unconfirmed.discard(job["id"])
        if progress.moved_msat == 0 and status in ("timeout", "stopped_failing"):
            # Each failed attempt counts toward the futility breaker; a silent job counts once.
            attempts = max(1, progress.failures)
            self.db.record_failure(job["scid"], "destination", now, attempts)
            for source in job["candidates"]:
                self.db.record_failure(source, "source", now, attempts)
        elif progress.moved_msat > 0:
            self.db.clear_failures(job["scid"], "destination")
        self.log(f"Rebalance job {job['id']} on {job['scid']} ended ({status}: {reason}); moved "
                 f"{progress.moved_msat // 1000} sat for {progress.fee_paid_msat // 1000} sat in fees,"
                 f" charged {charged // 1000} sat", "info")
        return {"job_id": job["id"], "scid": job["scid"], "status": status, "reason": reason,
                "moved_sats": progress.moved_msat // 1000, "fee_paid_sats": progress.fee_paid_msat // 1000,
                "charged_sats": charged // 1000}

    def _stop_sling(self, scid: str) -> bool:
        """Stops and removes sling's job on scid; True when sling confirmed it (sling-stop
        answers once the tasks have stopped; deletejob stops them too)."""
        confirmed = False
        for step in (self.node.sling_stop, self.node.sling_delete_job):
            try:
                step(scid)
                confirmed = True
            except NodeError as e:
                self.log(f"sling: {e}", "debug")
        return confirmed


UNKNOWN = object()   # the channel's state could not be read this time


def payment_fee_msat(job: Dict[str, Any]) -> int:
    """The most one payment of the job can cost: a chunk at max ppm, rounded up."""
    return -(-job["chunk_sats"] * 1000 * job["max_ppm"] // 1_000_000)


def charge_msat(job: Dict[str, Any], progress: SlingTotals) -> int:
    """What the ledger charges a job: the most its fees can be (sling's figures round down),
    plus each payment sling stopped waiting for at max ppm (it may have settled unrecorded);
    the reservation when its cost is unknown."""
    if not progress.reliable:
        return job["reserved_msat"]
    return max(progress.fee_paid_msat, progress.fee_max_msat) + progress.timeouts * payment_fee_msat(job)


def job_verdict(job: Dict[str, Any], progress: Optional[SlingTotals], channel: Any,
                config, now: float) -> Optional[tuple]:
    """Pure: (status, reason) when the job should end now, else None.

    progress None: sling's stats could not be read; channel UNKNOWN: nor the channel's.
    sling-once bounds what the job pays; this also stops it before a payment of unknown
    outcome beyond the spare chunk could take it past its reservation.
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
    if charge_msat(job, progress) + payment_fee_msat(job) > job["reserved_msat"]:
        return "budget", "one more payment could take the fees past the job's reservation"
    if progress.failures >= config.futility_max_failures and progress.moved_msat == 0:
        return "stopped_failing", f"{progress.failures} failed attempts and nothing moved"
    return None
