"""What an operator without the plugin runs: one fixed fee on every channel and a standard
rebalancer on top, on the same market and arrivals as the plugin (MarketSim) and through the
same simulated sling (SimSling with the market's RefillCosts, as market_run loads it).

The rule, checked once per hour: a channel below 30 % local gets a sling pull job to 50 %
(sling's own target), paying at most half the channel's fee (maxppm = fee / 2), drawing
from the other channels; a job whose channel reached its target is deleted, so it starts
again only when the channel falls below 30 % again. Sling attempts run every 10 minutes as
in the plugin's runs. The daily budget (the plugin's default, daily-budget-sats) is held
over any 24 hours the way the plugin holds it: an attempt is let run only when the most it
could pay still fits.

    run = run_standard(market, fee_ppm=233, budget_sat=5000)
    run.net_msat        # fees earned over the run less rebalance fees paid
"""
import dataclasses
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

from .market import HOUR, PPM, SAT, Market, MarketSim
from .sling import RefillCosts, SimSling
from .state import NodeState

CHECK_EVERY_S = HOUR
ATTEMPT_INTERVAL_S = 600          # as simnode.market_run: one sling attempt per task per 10 min
LOW_SHARE, TARGET_SHARE = 0.30, 0.50
CHUNK_SHARE, MIN_CHUNK_SAT = 0.05, 10_000   # one payment moves 5 % of the channel
BUDGET_WINDOW_S = 24 * HOUR


@dataclasses.dataclass
class StandardRun:
    """What fixed fees with the standard rebalancer did over a run (msat, relative seconds)."""
    fee_ppm: int
    budget_sat: int
    earned_msat: int
    rebalance_fee_msat: int
    moved_msat: int
    payments: List[Tuple[float, int, int, int]]    # (t, fee msat, amount msat, job maxppm)
    jobs_started: int
    attempts: int

    @property
    def net_msat(self) -> int:
        return self.earned_msat - self.rebalance_fee_msat

    def most_paid_in_24h_msat(self) -> int:
        most = total = first = 0
        for t, fee, _amount, _max in self.payments:
            total += fee
            while self.payments[first][0] <= t - BUDGET_WINDOW_S:
                total -= self.payments[first][1]
                first += 1
            most = max(most, total)
        return most


def node_state(market: Market, fee_ppm: int) -> Tuple[NodeState, List[dict]]:
    """The market's channels on a bare node state (the records MarketSim plays over)."""
    state = NodeState()
    for c in market.channels:
        state.add_channel(c.capacity_msat // SAT, c.local_msat // SAT, fee_ppm, 0, "local", c.peer_id, c.scid)
    return state, [state.channel(c.scid) for c in market.channels]


def chunk_sat(capacity_msat: int) -> int:
    return max(MIN_CHUNK_SAT, int(capacity_msat * CHUNK_SHARE) // SAT)


class _Standard:
    def __init__(self, market: Market, fee_ppm: int, budget_sat: int):
        self.market, self.fee_ppm, self.budget_msat = market, fee_ppm, budget_sat * SAT
        self.state, self.records = node_state(market, market.channels[0].start_fee_ppm)
        for rec, c in zip(self.records, market.channels):
            rec["fee_ppm"] = c.start_fee_ppm          # the pre-history ran at the start fees
        self.sim = MarketSim(market, self.records)
        self.sling = SimSling(self.state)
        self.sling.costs = RefillCosts({c.scid: c.refill_ppm for c in market.channels},
                                       seed=f"{market.kind}-{market.seed}")
        self.max_ppm = fee_ppm // 2
        self.recent: Deque[Tuple[float, int]] = deque()   # payments of the last 24 h
        self.payments: List[Tuple[float, int, int, int]] = []
        self.jobs_started = self.attempts = 0

    def _open(self, x: int, t: float) -> bool:
        opens = self.market.channels[x].opens_s
        return opens is None or opens <= t

    def _sync_to_records(self) -> None:
        for x, rec in enumerate(self.records):
            rec["local_msat"] = self.sim.local_msat[x]

    def _sync_to_sim(self) -> None:
        for x, rec in enumerate(self.records):
            self.sim.local_msat[x] = rec["local_msat"]

    def _start_jobs(self, t: float) -> None:
        """Channels below 30 % local without a job get a pull to 50 %."""
        for x, c in enumerate(self.market.channels):
            if c.scid in self.sling.jobs or not self._open(x, t):
                continue
            if self.sim.local_msat[x] >= LOW_SHARE * c.capacity_msat:
                continue
            # sling refuses a candidate that has a pull job of its own
            others = [o.scid for j, o in enumerate(self.market.channels)
                      if j != x and self._open(j, t) and o.scid not in self.sling.jobs]
            self.sling.add_job(c.scid, "pull", amount=chunk_sat(c.capacity_msat), maxppm=self.max_ppm,
                               target=TARGET_SHARE, candidates=others)
            self.sling.call("sling-go", [c.scid])
            self.jobs_started += 1

    def _delete_balanced_jobs(self) -> None:
        for scid in [s for s in self.sling.jobs if set(self.sling.state_of(s)) == {"Balanced"}]:
            self.sling.call("sling-deletejob", [scid])

    def _most_next_step_msat(self) -> int:
        """The most one sling step could pay: every running task's payment at its maxppm."""
        most = 0
        for scid, job in self.sling.jobs.items():
            running = sum(1 for st in self.sling.state_of(scid) if st not in ("Stopped", "Balanced"))
            most += running * (job["amount_msat"] * job["maxppm"] // PPM)
        return most

    def _spent_24h_msat(self, t: float) -> int:
        while self.recent and self.recent[0][0] <= t - BUDGET_WINDOW_S:
            self.recent.popleft()
        return sum(fee for _, fee in self.recent)

    def _sling_step(self, t: float) -> None:
        if not self.sling.jobs:
            return
        if self._spent_24h_msat(t) + self._most_next_step_msat() > self.budget_msat:
            return                                    # the budget would not cover it: wait
        self._sync_to_records()
        for move in self.sling.step(t):
            self.attempts += 1
            if move["ok"]:
                job = self.sling.jobs[move["scid"]]
                self.recent.append((t, move["fee_msat"]))
                self.payments.append((t, move["fee_msat"], move["amount_msat"], job["maxppm"]))
        self._sync_to_sim()
        self._delete_balanced_jobs()

    def play(self) -> StandardRun:
        m, sim = self.market, self.sim
        sim.advance(0.0)                              # the pre-history at the start fees
        earned0 = sum(sim.earned_msat)
        sim.fee_ppm = [self.fee_ppm] * sim.n
        for rec in self.records:
            rec["fee_ppm"] = self.fee_ppm
        t = 0.0
        while t < m.run_s:
            sim.advance(t)
            if t % CHECK_EVERY_S == 0:
                self._start_jobs(t)
            self._sling_step(t)
            t += ATTEMPT_INTERVAL_S
        sim.advance(m.run_s)
        return StandardRun(self.fee_ppm, self.budget_msat // SAT, sum(sim.earned_msat) - earned0,
                           sum(p[1] for p in self.payments), sum(p[2] for p in self.payments),
                           list(self.payments), self.jobs_started, self.attempts)


def run_standard(market: Market, fee_ppm: int, budget_sat: Optional[int] = None) -> StandardRun:
    """Fixed fee_ppm on every channel plus the standard rebalancer (budget: the plugin's
    default daily budget unless given)."""
    if budget_sat is None:
        budget_sat = default_budget_sat()
    return _Standard(market, fee_ppm, budget_sat).play()


def default_budget_sat() -> int:
    from modules.config import OPTIONS    # the plugin's option table: its default daily budget
    return next(o.default for o in OPTIONS if o.name == "daily-budget-sats")
