#!/usr/bin/env python3
"""Rebalancing bench: does the project's rebalance decision code pay in a simulated market
whose balances drain?

The market (built here from bench/market.py's demand curves and SimChannel): every
channel has an outbound demand curve (forwards per hour leaving through it, a function of
its fee) and an inbound weight (how often a forward enters through it). A forward of
`a` msat out through X needs `a` of X's local balance and enters through another channel
Y, which needs `a + fee` of remote balance; X's local falls by `a`, Y's rises by
`a + fee`. A forward whose out channel lacks the balance is lost. Where it enters:

* `--inbound any` (default): the sender picks our entry channel by weight among those
  with room (a failed route is retried through another of our peers);
* `--inbound strict`: by weight among all; if that channel is full, the forward is lost.

Channels are thirds: SOURCE-like (heavy outbound demand, little inbound: they drain),
SINK-like (little outbound, most inbound: they fill) and balanced. So without
rebalancing, sources empty and sinks fill.

Scenarios, same seeds and the same market, fees always by the project's controller
(decide_all_fees every 30 min, with flows and the refill cost of finished jobs, as
modules/fee_cycle.py passes them):

  (a) no rebalancing;
  (a') the same, with another stream for the forwards' entry channels and order: the
      noise floor of a comparison (the controller's path, hence its fees, diverges as
      soon as anything differs, so one seed's ratio carries that much noise);
  (b) the project: every hour the flows are analysed (analyze_channel on the last 7 days
      of forwards, EMA as FlowAnalyzer), running jobs are watched with
      job_manager.job_verdict, and plan_rebalances is called with the budget available
      (modules/budget.py ledger: reserve the decision's reserve_msat, reconcile to the
      actual cost), excluding busy destinations and the candidates of running jobs;
      failures feed the futility breaker as JobManager._finish records them;
  (c) naive: every channel below 30% local is pulled back to 50% from channels above 50%
      (each kept at 50% or more), at up to 1000 ppm, whatever it sells; same budget
      ledger (its amount is cut to fit), same sling and job watch.

Sling is simulated: per running job, `--attempts-per-hour` payments of one chunk
(rebalance-chunk-sats) from a random candidate above the job's floor, into the
destination until its local reaches the sling target (sling does not know the job's
amount: only the hourly watch stops it). Each attempt's effective ppm is the
destination's median refill cost (log-uniform in [--cost-lo, --cost-hi], fixed per
channel) times log-normal noise (--cost-sigma); it fails above the job's max ppm, and
also at random (--route-fail, no route). The fee is paid from the source's balance.
`--sling-once` models `sling-once onceamount=<amount>` instead: sling stops at the job's
amount, so the fees can never pass the reservation.

Measured after the warm-up: fees earned, rebalance fees paid (by payment time), net;
the budget check is the most paid in any 24 h of the whole run against the daily budget.

After the fact, a job's value: its destination's fees on forwards its own balance could
not have carried without the moved liquidity (that liquidity spent last), minus the
source's fees on forwards that failed but would have passed with the liquidity taken,
both within rebalance-horizon-days of each payment, minus the fees paid. It is
optimistic: it holds the fees as they were, while a refilled channel loses its scarcity
premium (the controller prices an empty channel up to 3x), so the liquidity it had anyway
sells for less. The net against (a) is the figure to trust; the per-job share is a hint.

    /tmp/tv/bin/python bench/bench_rebalance.py [--days 60] [--seeds 3] [--inbound any|strict]
"""
import argparse
import math
import os
import random
import statistics
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.market import ExponentialDemand, LogisticDemand, Market, SimChannel, poisson  # noqa: E402
from modules import budget  # noqa: E402
from modules.config import default_config  # noqa: E402
from modules.fee_controller import A_SET, FeeInputs, decide_all_fees  # noqa: E402
from modules.flow_analysis import analyze_channel  # noqa: E402
from modules.job_manager import JobPlan, job_verdict  # noqa: E402
from modules.models import FlowTotals  # noqa: E402
from modules.node import SlingTotals  # noqa: E402
from modules.rebalance_decisions import DESTINATION, plan_rebalances  # noqa: E402

T0 = 1_700_000_000          # unix seconds at simulated hour 0
SAT = 1000
PPM = 1_000_000
DT_H = 0.5                  # market step and fee cycle, hours
SOURCE_ROLE, SINK_ROLE, BALANCED_ROLE = "source", "sink", "balanced"
NAIVE_LOW, NAIVE_TARGET, NAIVE_MAX_PPM = 0.30, 0.50, 1000
SCENARIOS = ("a", "a2", "b", "c")
REBALANCING = ("b", "c")
LABELS = {"a": "(a) controller, no rebalancing",
          "a2": "(a') as (a), other entry draws",
          "b": "(b) controller + plan_rebalances",
          "c": "(c) controller + naive 30%->50%"}


def log_uniform(rng, lo, hi):
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


# --- the market ----------------------------------------------------------------------------
def build_channels(seed: int, args):
    """Fresh channels, roles, inbound weights and refill-cost medians (same for a seed)."""
    rng = random.Random(seed)
    channels, roles, out_day, cost = [], [], [], []
    for i in range(args.channels):
        role = (SOURCE_ROLE, SINK_ROLE, BALANCED_ROLE)[i % 3]
        if rng.random() < 1 / 3:
            cutoff = log_uniform(rng, 60, 1500)
            shape = LogisticDemand(1.0, cutoff, cutoff * rng.uniform(0.08, 0.25))
        else:
            shape = ExponentialDemand(1.0, log_uniform(rng, 40, 1500))
        capacity = int(log_uniform(rng, 2e6, 2e7)) * SAT
        amount = min(int(log_uniform(rng, 2e4, 2e5)) * SAT, capacity // 40)
        share = {SOURCE_ROLE: (0.15, 0.40), BALANCED_ROLE: (0.08, 0.20),
                 SINK_ROLE: (0.02, 0.06)}[role]
        daily_out = capacity * rng.uniform(*share)        # msat/day at the best fee
        probe = SimChannel("x", "x", capacity, 0, shape, amount, 0)
        best = Market.optimal_fee(probe, 0.0, 1, 2500)
        rate = daily_out / 24 / amount / shape.forwards_per_hour(best)
        demand = (LogisticDemand(rate, shape.cutoff_ppm, shape.width_ppm)
                  if isinstance(shape, LogisticDemand) else ExponentialDemand(rate, shape.scale_ppm))
        channels.append(SimChannel(
            scid=f"{800000 + i}x1x0", peer_id=f"02{i:064x}", capacity_msat=capacity,
            local_msat=int(capacity * rng.uniform(0.3, 0.7)), demand=demand, amount_msat=amount,
            fee_ppm=args.start_fee, drains=True))
        roles.append(role)
        out_day.append(daily_out)
        cost.append(log_uniform(rng, args.cost_lo, args.cost_hi))
    # inbound: sources get 10-40% of their outflow back, balanced 80-120%, sinks the rest
    inflow = [0.0] * len(channels)
    for i, role in enumerate(roles):
        if role == SOURCE_ROLE:
            inflow[i] = out_day[i] * rng.uniform(0.1, 0.4)
        elif role == BALANCED_ROLE:
            inflow[i] = out_day[i] * rng.uniform(0.8, 1.2)
    sinks = [i for i, r in enumerate(roles) if r == SINK_ROLE]
    rest = sum(out_day) - sum(inflow)
    sink_cap = sum(channels[i].capacity_msat for i in sinks)
    for i in sinks:
        inflow[i] = rest * channels[i].capacity_msat / sink_cap
    total = sum(inflow)
    weights = [w / total for w in inflow]
    return channels, roles, weights, cost


class Job:
    __slots__ = ("id", "dest", "amount_msat", "max_ppm", "reserve_msat", "candidates", "floors",
                 "target", "started_at", "moved", "fee_paid", "successes", "failures", "expected",
                 "gain", "lost", "ended", "status", "start_h")

    def __init__(self, job_id, dest, amount, max_ppm, reserve, candidates, floors, target, now,
                 expected=None):
        self.id, self.dest, self.amount_msat, self.max_ppm = job_id, dest, amount, max_ppm
        self.reserve_msat, self.candidates, self.floors, self.target = reserve, candidates, floors, target
        self.started_at, self.start_h = now, (now - T0) / 3600
        self.moved = self.fee_paid = self.successes = self.failures = 0
        self.expected = expected
        self.gain = self.lost = 0.0
        self.ended, self.status = None, None

    def as_db_row(self, chunk_sats):     # what job_verdict reads from the database's job row
        return {"amount_msat": self.amount_msat, "target": self.target, "chunk_sats": chunk_sats,
                "max_ppm": self.max_ppm, "reserved_msat": self.reserve_msat, "started_at": self.started_at}


class World:
    """One seed, one scenario."""

    def __init__(self, seed: int, scenario: str, args, config):
        self.args, self.config, self.scenario = args, config, scenario
        self.channels, self.roles, self.weights, cost = build_channels(seed, args)
        self.n = len(self.channels)
        self.scids = [c.scid for c in self.channels]
        self.idx = {c.scid: i for i, c in enumerate(self.channels)}
        self.cost_median = cost
        # common random numbers: each channel's demand has its own stream, as do entry
        # choices and sling, so the scenarios differ only where their decisions differ
        self.out_rng = [random.Random(seed * 100_003 + i) for i in range(self.n)]
        self.in_rng = random.Random(seed * 7919 + (2 if scenario == "a2" else 1))
        self.sling_rng = random.Random(seed * 104_729 + 2)
        self.window_steps = int(round(config.flow_window_days * 24 / DT_H))
        # cumulative per-step history for the flow window: in, out, fees, in count, out count
        self.hist = [[(0, 0, 0, 0, 0)] for _ in range(self.n)]
        self.cum = [[0, 0, 0, 0, 0] for _ in range(self.n)]
        self.flows: Dict[str, object] = {}
        self.fee_states: Dict[str, object] = {}
        self.cost_sum: Dict[str, List[int]] = {}          # scid -> [fees, moved] of finished jobs
        self.ledger: List[budget.BudgetEntry] = []
        self.limit = config.daily_budget_sats * SAT
        self.failures: Dict[str, tuple] = {}
        self.jobs: List[Job] = []
        self.running: List[Job] = []
        self.payments: List[tuple] = []                   # (hour, fee msat)
        self.dest_layers = [[] for _ in range(self.n)]    # [job, remaining msat, expires hour]
        self.src_layers = [[] for _ in range(self.n)]
        self.skips: Dict[str, int] = {}
        self.budget_refused = 0
        self.over_reserve = 0
        self.worst_overshoot = (0, 0.0)                   # (fees - reservation msat, moved / amount)
        self.lost_out = self.lost_out_fee = self.lost_in = 0
        self.earned_at_warm: Optional[List[int]] = None
        self.lost_at_warm = None

    # --- forwards --------------------------------------------------------------------
    def _amount(self, rng, mean: int) -> int:
        sigma = 0.5
        return max(1, int(rng.lognormvariate(math.log(max(mean, 1)) - sigma * sigma / 2, sigma)))

    def _entry(self, x: int, need: int) -> Optional[int]:
        chans, w, rng = self.channels, self.weights, self.in_rng
        if self.args.inbound == "strict":
            r = rng.random() * (1.0 - w[x])
            pick = None
            for j in range(self.n):
                if j == x:
                    continue
                pick = j
                r -= w[j]
                if r <= 0:
                    break
            ok = chans[pick].capacity_msat - chans[pick].local_msat >= need
            return pick if ok else None
        room = [j for j in range(self.n)
                if j != x and chans[j].capacity_msat - chans[j].local_msat >= need]
        if not room:
            return None
        total = sum(w[j] for j in room)
        r = rng.random() * total
        for j in room:
            r -= w[j]
            if r <= 0:
                return j
        return room[-1]

    def step_market(self, t: float) -> None:
        events = []
        for i, ch in enumerate(self.channels):
            rng = self.out_rng[i]
            for _ in range(poisson(rng, ch.demand.forwards_per_hour(ch.fee_ppm, t) * DT_H)):
                events.append((i, self._amount(rng, ch.amount_msat)))
        self.in_rng.shuffle(events)
        chans = self.channels
        for x, a in events:
            ch = chans[x]
            fee = int(ch.fee_base_msat + a * ch.fee_ppm / PPM)
            if a > ch.local_msat:
                ch.failed_forwards += 1
                self.lost_out += 1
                self.lost_out_fee += fee
                self._source_loss(x, a, fee, t)
                continue
            y = self._entry(x, a + fee)
            if y is None:
                self.lost_in += 1
                continue
            self._dest_gain(x, a, fee, t)
            ch.local_msat -= a
            chans[y].local_msat += a + fee
            ch.out_msat += a
            ch.forwards += 1
            ch.earned_msat += fee
            chans[y].in_msat += a + fee
            c = self.cum[x]
            c[1] += a
            c[2] += fee
            c[4] += 1
            c = self.cum[y]
            c[0] += a + fee
            c[3] += 1
        end = t + DT_H
        for i, ch in enumerate(chans):
            ch._times.append(end)
            ch._earned.append(ch.earned_msat)
            ch._counts.append(ch.forwards)
            self.hist[i].append(tuple(self.cum[i]))

    # after-the-fact attribution (see module doc)
    def _dest_gain(self, x: int, a: int, fee: int, t: float) -> None:
        layers = [l for l in self.dest_layers[x] if l[2] > t and l[1] > 0]
        self.dest_layers[x] = layers
        if not layers:
            return
        held = sum(l[1] for l in layers)
        own = self.channels[x].local_msat - held          # what it would have had without
        need = min(held, a - max(own, 0)) if a > own else 0
        for l in layers:
            if need <= 0:
                break
            take = min(l[1], need)
            l[0].gain += fee * take / a
            l[1] -= take
            need -= take

    def _source_loss(self, x: int, a: int, fee: int, t: float) -> None:
        layers = [l for l in self.src_layers[x] if l[2] > t and l[1] > 0]
        self.src_layers[x] = layers
        if not layers:
            return
        taken = sum(l[1] for l in layers)
        if self.channels[x].local_msat + taken < a:
            return                                          # it would have failed anyway
        need = a
        for l in layers:
            if need <= 0:
                break
            take = min(l[1], need)
            l[0].lost += fee * take / a
            l[1] -= take
            need -= take

    # --- flows and fees ----------------------------------------------------------------
    def analyse_flows(self, now: float) -> None:
        for i, ch in enumerate(self.channels):
            h = self.hist[i]
            lo = h[max(0, len(h) - 1 - self.window_steps)]
            hi = h[-1]
            totals = FlowTotals(ch.scid, hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2],
                                hi[3] - lo[3], hi[4] - lo[4])
            self.flows[ch.scid] = analyze_channel(ch.scid, totals, self.flows.get(ch.scid),
                                                  self.config, now)

    def fee_cycle(self, now: float) -> None:
        now_h = (now - T0) / 3600
        inputs = []
        for ch in self.channels:
            state = self.fee_states.get(ch.scid)
            since_h = (state.last_change_at - T0) / 3600 if state else now_h
            earned, forwards = ch.earned_since(since_h)
            c = self.cost_sum.get(ch.scid)
            cost = c[0] * PPM // c[1] if c and c[1] > 0 else None
            inputs.append(FeeInputs(channel=ch.to_channel(), flow=self.flows.get(ch.scid),
                                    earned_msat_since_change=earned,
                                    has_routed_out_ever=ch.forwards > 0,
                                    rebalance_cost_ppm=cost, forwards_since_change=forwards))
        for d in decide_all_fees(inputs, self.fee_states, self.config, now):
            if d.action == A_SET:
                self.channels[self.idx[d.short_channel_id]].fee_ppm = d.new_fee_ppm
            self.fee_states[d.short_channel_id] = d.new_state

    # --- sling ----------------------------------------------------------------------------
    def step_sling(self, t: float) -> None:
        chunk = self.config.rebalance_chunk_sats * SAT
        horizon_h = self.config.rebalance_horizon_days * 24
        attempts = self.args.attempts_per_hour * DT_H
        rng = self.sling_rng
        for job in self.running:
            dest = self.channels[self.idx[job.dest]]
            n = int(attempts) + (1 if rng.random() < attempts - int(attempts) else 0)
            for k in range(n):
                if not self.args.hourly_watch and job_verdict(
                        job.as_db_row(self.config.rebalance_chunk_sats),
                        SlingTotals(job.moved, job.fee_paid, job.successes, job.failures),
                        dest.to_channel(), self.config, T0 + t * 3600) is not None:
                    break                                   # the plugin's 15 s watch stops it first
                if self.args.sling_once:
                    if job.moved >= job.amount_msat:
                        break                               # sling-once: onceamount reached
                elif dest.local_msat >= job.target * dest.capacity_msat:
                    break                                   # sling-job idles at its target
                if dest.capacity_msat - dest.local_msat < chunk:
                    break
                worst_fee = -(-chunk * job.max_ppm // PPM)
                eligible = [self.idx[s] for s in job.candidates
                            if self.channels[self.idx[s]].local_msat - chunk - worst_fee
                            >= job.floors[s]]
                if not eligible:
                    break
                src_i = rng.choice(eligible)
                src = self.channels[src_i]
                ppm = self.cost_median[self.idx[job.dest]] * rng.lognormvariate(0.0, self.args.cost_sigma)
                if rng.random() < self.args.route_fail or ppm > job.max_ppm:
                    job.failures += 1
                    continue
                fee = -(-chunk * int(math.ceil(ppm)) // PPM)
                src.local_msat -= chunk + fee
                dest.local_msat += chunk
                job.moved += chunk
                job.fee_paid += fee
                job.successes += 1
                paid_h = t + DT_H * (k + 1) / (n + 1)
                self.payments.append((paid_h, fee))
                self.dest_layers[self.idx[job.dest]].append([job, chunk, paid_h + horizon_h])
                self.src_layers[src_i].append([job, chunk + fee, paid_h + horizon_h])

    # --- the rebalance pass ---------------------------------------------------------------
    def watch(self, now: float) -> None:
        still = []
        for job in self.running:
            ch = self.channels[self.idx[job.dest]]
            progress = SlingTotals(job.moved, job.fee_paid, job.successes, job.failures)
            verdict = job_verdict(job.as_db_row(self.config.rebalance_chunk_sats), progress, ch.to_channel(),
                                  self.config, now)
            if verdict is None:
                still.append(job)
                continue
            job.status, job.ended = verdict[0], now
            if job.fee_paid > job.reserve_msat:
                self.over_reserve += 1
            self.worst_overshoot = (max(self.worst_overshoot[0], job.fee_paid - job.reserve_msat),
                                    max(self.worst_overshoot[1], job.moved / job.amount_msat))
            self.ledger = budget.reconcile(self.ledger, job.id, job.fee_paid, now)
            # as JobManager._finish records outcomes
            if job.moved == 0 and job.status in ("timeout", "budget", "stopped_failing"):
                count, _ = self.failures.get(job.dest, (0, None))
                self.failures[job.dest] = (count + max(1, job.failures), now)
            elif job.moved > 0:
                self.failures.pop(job.dest, None)
                c = self.cost_sum.setdefault(job.dest, [0, 0])
                c[0] += job.fee_paid
                c[1] += job.moved
        self.running = still
        self.ledger = budget.prune(self.ledger, now)

    def _start(self, job: Job, now: float, measured: bool) -> bool:
        self.ledger, ok, _ = budget.reserve(self.ledger, self.limit, job.id, job.reserve_msat, now)
        if not ok:
            if measured:
                self.budget_refused += 1
            return False
        self.jobs.append(job)
        self.running.append(job)
        return True

    def plan_project(self, now: float, measured: bool) -> None:
        busy = {j.dest for j in self.running}
        candidates = {s for j in self.running for s in j.candidates}
        available = budget.budget_status(self.ledger, self.limit, now).available_msat
        chans = [c.to_channel() for c in self.channels]
        decisions = plan_rebalances(
            chans, self.flows, {c.short_channel_id: c.fee_ppm for c in chans}, self.failures,
            self.config, now, sources_exclude=busy | candidates, destinations_exclude=busy,
            budget_available_msat=available)
        chunk_sats = self.config.rebalance_chunk_sats
        for d in decisions:
            if d.role != DESTINATION:
                continue
            if not d.start:
                if measured:
                    why = skip_reason(d)
                    self.skips[why] = self.skips.get(why, 0) + 1
                continue
            ch = self.channels[self.idx[d.short_channel_id]]
            plan = JobPlan(d.short_channel_id, d.amount_msat, chunk_sats, d.max_ppm, d.reserve_msat,
                           list(d.candidates), d.target_local_msat, ch.capacity_msat,
                           d.source_floor_msat)
            floor = plan.source_floor_sats() * SAT       # sling's depleteuptoamount
            job = Job(len(self.jobs) + 1, d.short_channel_id, d.amount_msat, d.max_ppm,
                      d.reserve_msat, tuple(d.candidates), {s: floor for s in d.candidates},
                      plan.sling_target(), now, expected=d.expected_profit_msat)
            self._start(job, now, measured)

    def plan_naive(self, now: float, measured: bool) -> None:
        chunk = self.config.rebalance_chunk_sats * SAT
        busy = {j.dest for j in self.running}
        for ch in sorted(self.channels, key=lambda c: c.local_msat / c.capacity_msat):
            if ch.scid in busy or ch.local_msat >= NAIVE_LOW * ch.capacity_msat:
                continue
            sources = sorted((c for c in self.channels
                              if c is not ch and c.local_msat > NAIVE_TARGET * c.capacity_msat),
                             key=lambda c: -c.local_msat / c.capacity_msat)[:10]
            if not sources:
                continue
            available = budget.budget_status(self.ledger, self.limit, now).available_msat
            fits = available * PPM // NAIVE_MAX_PPM - chunk
            want = min(int(NAIVE_TARGET * ch.capacity_msat) - ch.local_msat,
                       self.config.rebalance_max_amount_sats * SAT, fits)
            amount = want // chunk * chunk
            if amount <= 0:
                if measured:
                    self.budget_refused += 1
                continue
            reserve = -(-(amount + chunk) * NAIVE_MAX_PPM // PPM)
            plan = JobPlan(ch.scid, amount, self.config.rebalance_chunk_sats, NAIVE_MAX_PPM, reserve,
                           [c.scid for c in sources], ch.local_msat + amount, ch.capacity_msat)
            job = Job(len(self.jobs) + 1, ch.scid, amount, NAIVE_MAX_PPM, reserve,
                      tuple(c.scid for c in sources),
                      {c.scid: int(NAIVE_TARGET * c.capacity_msat) for c in sources},
                      plan.sling_target(), now)
            self._start(job, now, measured)

    # --- the run --------------------------------------------------------------------------
    def run(self) -> "World":
        a = self.args
        steps = int(round(a.days * 24 / DT_H))
        warm = a.warmup_days * 24
        for k in range(steps):
            t = k * DT_H
            if abs(t - warm) < 1e-9:
                self.earned_at_warm = [c.earned_msat for c in self.channels]
                self.lost_at_warm = (self.lost_out, self.lost_out_fee, self.lost_in)
            self.step_market(t)
            self.step_sling(t)
            now = T0 + (t + DT_H) * 3600
            self.analyse_flows(now)
            self.fee_cycle(now)
            if (k + 1) % int(round(self.config.rebalance_interval_seconds / 3600 / DT_H)) == 0:
                self.watch(now)
                measured = t + DT_H > warm
                if self.scenario == "b":
                    self.plan_project(now, measured)
                elif self.scenario == "c":
                    self.plan_naive(now, measured)
        self.end_h = steps * DT_H
        self.warm_h = warm
        return self


def skip_reason(d) -> str:
    """Why a destination did not start, in the order the rules apply."""
    if d.futility_blocked:
        return "futility"
    if any("does not sell" in r for r in d.reasons):
        return "flow"
    if d.amount_msat == 0:
        return "no_source"
    if any(r.startswith("budget:") for r in d.reasons):
        return "budget"
    return "ev"


def max_window_spend(payments, window_h=24.0) -> int:
    """Most fees paid (by payment time) in any window (t - 24 h, t]."""
    pay = sorted(payments)
    best = total = lo = 0
    for hi in range(len(pay)):
        total += pay[hi][1]
        while pay[lo][0] <= pay[hi][0] - window_h:
            total -= pay[lo][1]
            lo += 1
        best = max(best, total)
    return best


def summarise(w: World) -> dict:
    warm, end = w.warm_h, w.end_h
    horizon_h = w.config.rebalance_horizon_days * 24
    earned = sum(c.earned_msat - e for c, e in zip(w.channels, w.earned_at_warm))
    paid = sum(f for h, f in w.payments if h > warm)
    jobs = [j for j in w.jobs if j.start_h >= warm]
    judged = [j for j in jobs if j.start_h <= end - horizon_h and j.moved > 0]
    profitable = [j for j in judged if j.gain - j.lost - j.fee_paid > 0]
    by_role = {}
    for c, e, role in zip(w.channels, w.earned_at_warm, w.roles):
        by_role[role] = by_role.get(role, 0) + c.earned_msat - e
    lost0 = w.lost_at_warm
    return dict(
        earned=earned / SAT, paid=paid / SAT, net=(earned - paid) / SAT,
        max24=max_window_spend(w.payments) / SAT, budget=w.limit / SAT,
        jobs=len(jobs), moved=sum(j.moved for j in jobs) / SAT,
        moved_jobs=sum(1 for j in jobs if j.moved > 0),
        judged=len(judged), profitable=len(profitable),
        attributed=sum(j.gain - j.lost - j.fee_paid for j in judged) / SAT,
        expected=sum((j.expected or 0) for j in judged) / SAT,
        skips=dict(w.skips), budget_refused=w.budget_refused, over_reserve=w.over_reserve,
        overshoot=w.worst_overshoot,
        lost_out=w.lost_out - lost0[0], lost_out_fee=(w.lost_out_fee - lost0[1]) / SAT,
        lost_in=w.lost_in - lost0[2], by_role={k: v / SAT for k, v in by_role.items()},
        statuses=_count(j.status or "running" for j in jobs))


def _count(items):
    out = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def describe_market(w: World, args) -> None:
    print(f"\nmarket of seed {args.seed} ({len(w.channels)} channels; out/day and in/day in % of "
          f"capacity at each curve's best fee; refill cost = median ppm of a rebalance into it):")
    print(f"{'scid':>9} {'role':>8} {'cap Msat':>8} {'curve':<32} {'best':>5} {'out/d':>6} "
          f"{'in/d':>5} {'refill':>6}")
    total_out = 0.0
    outs = []
    for ch in w.channels:
        best = Market.optimal_fee(ch, 0.0, 1, 2500)
        out = ch.demand.forwards_per_hour(best) * 24 * ch.amount_msat
        outs.append((ch, best, out))
        total_out += out
    for (ch, best, out), role, wt, cost in zip(outs, w.roles, w.weights, w.cost_median):
        print(f"{ch.scid[:6]:>9} {role:>8} {ch.capacity_msat / 1e9:8.2f} {ch.demand.describe():<32} "
              f"{best:5d} {100 * out / ch.capacity_msat:5.0f}% {100 * wt * total_out / ch.capacity_msat:4.0f}% "
              f"{cost:6.0f}")


def print_seed_channels(results, seed, args) -> None:
    wa, wb = results[("a", seed)], results[("b", seed)]
    wc = results.get(("c", seed))
    print(f"\nper channel, seed {seed}, after day {args.warmup_days:g}: earned sats, final fee ppm "
          f"and local %, (b) jobs/moved Msat/fees sats")
    hdr = (f"{'scid':>7} {'role':>8} {'refill':>6} | {'a earned':>9} {'fee':>5} {'loc':>4} | "
           f"{'b earned':>9} {'fee':>5} {'loc':>4} {'jobs':>4} {'moved':>6} {'paid':>6}")
    if wc:
        hdr += f" | {'c earned':>9} {'jobs':>4} {'paid':>6}"
    print(hdr)
    warm = args.warmup_days * 24

    def per(w, scid):
        js = [j for j in w.jobs if j.dest == scid and j.start_h >= warm]
        return len(js), sum(j.moved for j in js) / 1e9, sum(j.fee_paid for j in js) / SAT

    for i, (ca, cb) in enumerate(zip(wa.channels, wb.channels)):
        ea = (ca.earned_msat - wa.earned_at_warm[i]) / SAT
        eb = (cb.earned_msat - wb.earned_at_warm[i]) / SAT
        nb, mb, pb = per(wb, cb.scid)
        line = (f"{ca.scid[:6]:>7} {wa.roles[i]:>8} {wa.cost_median[i]:6.0f} | {ea:9.0f} {ca.fee_ppm:5d} "
                f"{100 * ca.local_msat / ca.capacity_msat:3.0f}% | {eb:9.0f} {cb.fee_ppm:5d} "
                f"{100 * cb.local_msat / cb.capacity_msat:3.0f}% {nb:4d} {mb:6.1f} {pb:6.0f}")
        if wc:
            cc = wc.channels[i]
            ec = (cc.earned_msat - wc.earned_at_warm[i]) / SAT
            nc, _, pc = per(wc, cc.scid)
            line += f" | {ec:9.0f} {nc:4d} {pc:6.0f}"
        print(line)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="independent markets (seed, seed+1, ...)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--channels", type=int, default=24)
    p.add_argument("--days", type=float, default=60)
    p.add_argument("--warmup-days", type=float, default=14)
    p.add_argument("--start-fee", type=int, default=100, help="every channel's fee at the start")
    p.add_argument("--inbound", choices=("any", "strict"), default="any",
                   help="entry channel of a forward: by weight among those with room (any), "
                        "or by weight and lost if full (strict)")
    p.add_argument("--budget-sats", type=int, default=None,
                   help="daily rebalance budget (default: the config's daily-budget-sats)")
    p.add_argument("--attempts-per-hour", type=float, default=12, help="sling payments per job per hour")
    p.add_argument("--route-fail", type=float, default=0.25, help="share of attempts with no route")
    p.add_argument("--cost-lo", type=float, default=200, help="lowest median refill cost, ppm")
    p.add_argument("--cost-hi", type=float, default=600, help="highest median refill cost, ppm")
    p.add_argument("--cost-sigma", type=float, default=0.3, help="log-normal noise of one attempt's ppm")
    p.add_argument("--sling-once", action="store_true",
                   help="model sling-once (stops at onceamount = the job's amount) instead of "
                        "sling-job (runs to its target until the next watch)")
    p.add_argument("--no-naive", action="store_true", help="skip scenario (c)")
    p.add_argument("--hourly-watch", action="store_true",
                   help="check jobs only at each hourly pass (the plugin checks every 15 s, far more often"
                        " than sling pays: by default a job is checked before each payment)")
    p.add_argument("--no-noise", action="store_true", help="skip (a'), the noise reference")
    args = p.parse_args(argv)
    overrides = {} if args.budget_sats is None else {"daily_budget_sats": args.budget_sats}
    config = default_config(**overrides)
    print(" ".join(["command: /tmp/tv/bin/python bench/bench_rebalance.py"]
                   + list(argv if argv is not None else sys.argv[1:])))
    print(f"market: {args.channels} channels (a third each source-, sink- and balanced-like), "
          f"{args.days:g} days, measured after day {args.warmup_days:g}, step and fee cycle "
          f"{DT_H * 60:g} min, start fee {args.start_fee} ppm, inbound '{args.inbound}', "
          f"balances drain")
    print(f"rebalancing: pass every {config.rebalance_interval_seconds / 60:g} min, daily budget "
          f"{config.daily_budget_sats} sat, chunk {config.rebalance_chunk_sats} sat, max amount "
          f"{config.rebalance_max_amount_sats} sat, job timeout {config.rebalance_job_timeout_minutes} "
          f"min, horizon {config.rebalance_horizon_days:g} d, min profit "
          f"{config.rebalance_min_profit_sats} sat, target ratio {config.rebalance_target_ratio:g} / "
          f"{config.rebalance_target_days:g} d of volume / floor {config.rebalance_floor_sats} sat")
    kind = "sling-once (stops at the amount)" if args.sling_once else "sling-job (stops at its target)"
    print(f"sling model: {kind}, {args.attempts_per_hour:g} attempts/h per job, {100 * args.route_fail:g}% "
          f"no-route failures, refill cost per destination log-uniform median "
          f"[{args.cost_lo:g}, {args.cost_hi:g}] ppm x lognormal(sigma {args.cost_sigma:g}) per attempt")
    started = time.time()
    scenarios = [s for s in SCENARIOS if not (s == "c" and args.no_naive)
                 and not (s == "a2" and args.no_noise)]
    seeds = list(range(args.seed, args.seed + args.seeds))
    results, rows = {}, {}
    for seed in seeds:
        for s in scenarios:
            w = World(seed, s, args, config).run()
            results[(s, seed)] = w
            rows[(s, seed)] = summarise(w)
    describe_market(results[("a", seeds[0])], args)

    print(f"\nper seed (sats, after the warm-up; max 24h = most rebalance fees paid in any 24 h "
          f"of the whole run):")
    print(f"{'seed':>4} {'scenario':<34} {'earned':>9} {'reb paid':>8} {'net':>9} {'vs (a)':>7} "
          f"{'max 24h':>7} {'jobs':>5} {'moved M':>7} {'profit.':>9} {'EV skip':>7} "
          f"{'lost fwd':>8} {'lost in':>7}")
    for seed in seeds:
        base = rows[("a", seed)]["net"]
        for s in scenarios:
            r = rows[(s, seed)]
            prof = f"{r['profitable']}/{r['judged']}" if r["judged"] else "-"
            print(f"{seed:>4} {LABELS[s]:<34} {r['earned']:9.0f} {r['paid']:8.0f} {r['net']:9.0f} "
                  f"{r['net'] / base:6.3f}x {r['max24']:7.0f} {r['jobs']:5d} {r['moved'] / 1000:7.1f} "
                  f"{prof:>9} {r['skips'].get('ev', 0) if s == 'b' else '-':>7} {r['lost_out']:8d} "
                  f"{r['lost_in']:7d}")
    print("  (moved M: million sats moved; profit.: jobs profitable after the fact / jobs judged,"
          " i.e. that moved something and started at least a horizon before the end; lost fwd:"
          " forwards lost to a missing local balance; lost in: to a full entry channel;"
          " (a') differs from (a) only by chance: the noise of one seed's ratio)")

    print(f"\nmean over {len(seeds)} seeds:")
    print(f"{'scenario':<34} {'earned':>9} {'reb paid':>8} {'net':>9} {'net vs (a) +- se':>18} "
          f"{'worse':>5} {'jobs':>6} {'profitable':>10} {'EV skips':>8} {'lost fwd fees':>13}")
    for s in scenarios:
        rs = [rows[(s, seed)] for seed in seeds]
        ratios = [r["net"] / rows[("a", seed)]["net"] for r, seed in zip(rs, seeds)]
        ratio = statistics.mean(ratios)
        se = statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else float("nan")
        worse = sum(1 for x in ratios if x < 1) if s != "a" else 0
        judged = sum(r["judged"] for r in rs)
        prof = f"{100 * sum(r['profitable'] for r in rs) / judged:.0f}%" if judged else "-"
        skips = f"{statistics.mean(r['skips'].get('ev', 0) for r in rs):.0f}" if s == "b" else "-"
        print(f"{LABELS[s]:<34} {statistics.mean(r['earned'] for r in rs):9.0f} "
              f"{statistics.mean(r['paid'] for r in rs):8.0f} {statistics.mean(r['net'] for r in rs):9.0f} "
              f"{ratio:9.3f}x +-{se:.3f} {worse:2d}/{len(ratios):<2d} {statistics.mean(r['jobs'] for r in rs):6.1f} {prof:>10} {skips:>8} "
              f"{statistics.mean(r['lost_out_fee'] for r in rs):13.0f}")

    print("  (net vs (a): mean of the seeds' ratios +- its standard error; worse: seeds where net < (a);"
          " profitable: share of judged jobs whose after-the-fact value > 0, optimistic: see the doc)")
    print("\nearned by role (mean sats after the warm-up):")
    for s in scenarios:
        rs = [rows[(s, seed)] for seed in seeds]
        parts = "  ".join(f"{role} {statistics.mean(r['by_role'][role] for r in rs):8.0f}"
                          for role in (SOURCE_ROLE, BALANCED_ROLE, SINK_ROLE))
        print(f"  {LABELS[s]:<34} {parts}")

    print("\nrebalance jobs (after the warm-up, all seeds):")
    for s in [s for s in scenarios if s in REBALANCING]:
        rs = [rows[(s, seed)] for seed in seeds]
        st = {}
        for r in rs:
            for k, v in r["statuses"].items():
                st[k] = st.get(k, 0) + v
        att = sum(r["attributed"] for r in rs)
        line = (f"  {LABELS[s]:<34} ended {st}; moved something {sum(r['moved_jobs'] for r in rs)}; "
                f"after the fact, judged jobs net {att:.0f} sat")
        if s == "b":
            line += f" (the EV rule expected {sum(r['expected'] for r in rs):.0f} sat)"
        print(line)
        if s == "b":
            sk = {}
            for r in rs:
                for k, v in r["skips"].items():
                    sk[k] = sk.get(k, 0) + v
            print(f"      destinations not started, by reason (channel-passes): {sk}")
        print(f"      start refused by the budget (channel-passes): "
              f"{sum(r['budget_refused'] for r in rs)}; jobs whose fees exceeded their "
              f"reservation: {sum(r['over_reserve'] for r in rs)} (worst by "
              f"{max(r['overshoot'][0] for r in rs) / SAT:.1f} sat; most moved "
              f"{max(r['overshoot'][1] for r in rs):.1f}x the job's amount)")

    print("\nbudget check (rebalance fees paid in any 24 h, by payment time, whole run):")
    ok_all = True
    for s in [s for s in scenarios if s in REBALANCING]:
        worst = max(rows[(s, seed)]["max24"] for seed in seeds)
        limit = rows[(s, seeds[0])]["budget"]
        ok = worst <= limit
        ok_all &= ok
        print(f"  {LABELS[s]:<34} max {worst:8.0f} sat vs daily budget {limit:.0f} sat: "
              f"{'OK' if ok else 'EXCEEDED'}")
    print(f"  budget never exceeded: {'yes' if ok_all else 'NO'}"
          + ("" if ok_all else " (sling-job runs to its target; the hourly watch stops a job "
             "only after it moved past its amount: see --sling-once)"))

    print_seed_channels(results, seeds[0], args)
    print(f"\nran in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
