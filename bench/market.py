"""A simulated routing market for benches.

Each channel has a capacity, a local balance and a demand curve: forwards per hour that
leave through it as a function of its fee (and, for a shifting curve, of time). Forwards
arrive as a Poisson process from a seeded RNG, their amounts are log-normal around the
channel's mean amount, and each earns `base + amount * fee_ppm / 1e6` msat. Optionally the
balance drains with outbound forwards (a forward needs the local balance to leave) and
fills with inbound ones, so a rebalancing bench can reuse the same market.

Times are hours since the start of the simulation; amounts msat; fees ppm.
"""
import bisect
import dataclasses
import math
import random
from typing import Dict, Iterable, List, Optional, Tuple

from modules.models import Channel


# --- demand curves: forwards per hour as a function of fee -----------------------------------
@dataclasses.dataclass(frozen=True)
class ExponentialDemand:
    """d(f) = rate_at_zero * exp(-f / scale_ppm); revenue peaks at f = scale_ppm."""
    rate_at_zero: float
    scale_ppm: float

    def forwards_per_hour(self, fee_ppm: float, t_hours: float = 0.0) -> float:
        return self.rate_at_zero * math.exp(-fee_ppm / self.scale_ppm)

    def describe(self) -> str:
        return f"exp   A={self.rate_at_zero:5.1f}/h f0={self.scale_ppm:5.0f}"


@dataclasses.dataclass(frozen=True)
class LogisticDemand:
    """d(f) = rate_at_zero / (1 + exp((f - cutoff_ppm) / width_ppm)): senders switch to a
    competitor priced near cutoff_ppm; a narrow width is a cliff."""
    rate_at_zero: float
    cutoff_ppm: float
    width_ppm: float

    def forwards_per_hour(self, fee_ppm: float, t_hours: float = 0.0) -> float:
        x = (fee_ppm - self.cutoff_ppm) / self.width_ppm
        return 0.0 if x > 700 else self.rate_at_zero / (1.0 + math.exp(x))

    def describe(self) -> str:
        return f"logit A={self.rate_at_zero:5.1f}/h c={self.cutoff_ppm:5.0f} w={self.width_ppm:4.0f}"


@dataclasses.dataclass(frozen=True)
class ShiftingDemand:
    """`before` until at_hours, then `after` (a competitor opens, a peer's fees change…)."""
    before: object
    after: object
    at_hours: float

    def current(self, t_hours: float):
        return self.before if t_hours < self.at_hours else self.after

    def forwards_per_hour(self, fee_ppm: float, t_hours: float = 0.0) -> float:
        return self.current(t_hours).forwards_per_hour(fee_ppm, t_hours)

    def describe(self) -> str:
        return f"{self.before.describe()} -> day {self.at_hours / 24:g}: {self.after.describe()}"


# --- channels --------------------------------------------------------------------------------
@dataclasses.dataclass
class SimChannel:
    scid: str
    peer_id: str
    capacity_msat: int
    local_msat: int
    demand: object
    amount_msat: int                 # mean amount of an outgoing forward
    fee_ppm: int
    fee_base_msat: int = 0
    amount_sigma: float = 0.5        # log-normal spread of amounts
    opener: str = "local"
    max_htlcs: int = 483
    drains: bool = False             # outbound forwards need and consume local balance
    inflow_per_hour: float = 0.0     # forwards arriving through it (fill local if drains)
    inflow_amount_msat: int = 0
    # running totals
    earned_msat: int = 0
    forwards: int = 0
    out_msat: int = 0
    in_msat: int = 0
    failed_forwards: int = 0         # demand lost to a missing balance
    _times: List[float] = dataclasses.field(default_factory=lambda: [0.0])
    _earned: List[int] = dataclasses.field(default_factory=lambda: [0])
    _counts: List[int] = dataclasses.field(default_factory=lambda: [0])

    def revenue_per_forward_msat(self, fee_ppm: float) -> float:
        return self.fee_base_msat + self.amount_msat * fee_ppm / 1e6

    def expected_revenue_msat_per_hour(self, fee_ppm: float, t_hours: float = 0.0) -> float:
        return self.demand.forwards_per_hour(fee_ppm, t_hours) * self.revenue_per_forward_msat(fee_ppm)

    def earned_since(self, t_hours: float) -> Tuple[int, int]:
        """(fees msat, forwards) earned since t_hours (a step boundary or later)."""
        i = bisect.bisect_left(self._times, t_hours - 1e-9)
        i = min(i, len(self._times) - 1)
        return self.earned_msat - self._earned[i], self.forwards - self._counts[i]

    def to_channel(self, htlcs_in_use: int = 0, state: str = "CHANNELD_NORMAL") -> Channel:
        return Channel(short_channel_id=self.scid, peer_id=self.peer_id, state=state,
                       capacity_msat=self.capacity_msat, local_msat=self.local_msat,
                       spendable_msat=self.local_msat, receivable_msat=self.capacity_msat - self.local_msat,
                       fee_base_msat=self.fee_base_msat, fee_ppm=self.fee_ppm, opener=self.opener,
                       htlcs_in_use=htlcs_in_use, max_htlcs=self.max_htlcs, peer_connected=True)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:   # normal approximation, plenty for a bench
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class Market:
    def __init__(self, channels: Iterable[SimChannel], seed: int = 1):
        self.channels: Dict[str, SimChannel] = {c.scid: c for c in channels}
        self.rng = random.Random(seed)

    def _amount(self, mean: int, sigma: float) -> int:
        mu = math.log(max(mean, 1)) - sigma * sigma / 2
        return max(1, int(self.rng.lognormvariate(mu, sigma)))

    def step(self, t_hours: float, dt_hours: float) -> None:
        """Forwards during [t, t + dt) at the fees in force."""
        end = t_hours + dt_hours
        for ch in self.channels.values():
            n = poisson(self.rng, ch.demand.forwards_per_hour(ch.fee_ppm, t_hours) * dt_hours)
            for _ in range(n):
                amount = self._amount(ch.amount_msat, ch.amount_sigma)
                if ch.drains:
                    if amount > ch.local_msat:
                        ch.failed_forwards += 1
                        continue
                    ch.local_msat -= amount
                ch.out_msat += amount
                ch.forwards += 1
                ch.earned_msat += int(ch.fee_base_msat + amount * ch.fee_ppm / 1e6)
            for _ in range(poisson(self.rng, ch.inflow_per_hour * dt_hours)):
                amount = self._amount(ch.inflow_amount_msat, ch.amount_sigma)
                if ch.drains:
                    if ch.local_msat + amount > ch.capacity_msat:
                        continue
                    ch.local_msat += amount
                ch.in_msat += amount
            ch._times.append(end)
            ch._earned.append(ch.earned_msat)
            ch._counts.append(ch.forwards)

    @staticmethod
    def optimal_fee(ch: SimChannel, t_hours: float, lo: int, hi: int) -> int:
        """The revenue-maximising fee of the curve in force at t_hours (integer grid)."""
        return max(range(lo, hi + 1), key=lambda f: ch.expected_revenue_msat_per_hour(f, t_hours))

    @staticmethod
    def best_static_fee(channels: List[SimChannel], windows: List[Tuple[float, float]],
                        grid: Iterable[int]) -> Tuple[int, float]:
        """One fee for every channel maximising expected revenue over the (start, end) hour
        windows; returns (fee, expected msat)."""
        best: Optional[Tuple[int, float]] = None
        for f in grid:
            total = 0.0
            for ch in channels:
                for start, end in windows:
                    total += expected_between(ch, f, start, end)
            if best is None or total > best[1]:
                best = (f, total)
        return best


def expected_between(ch: SimChannel, fee: float, start: float, end: float) -> float:
    """Expected msat at a constant fee over [start, end), honouring a shift inside it."""
    demand = ch.demand
    if isinstance(demand, ShiftingDemand) and start < demand.at_hours < end:
        return (ch.expected_revenue_msat_per_hour(fee, start) * (demand.at_hours - start)
                + ch.expected_revenue_msat_per_hour(fee, demand.at_hours) * (end - demand.at_hours))
    return ch.expected_revenue_msat_per_hour(fee, start) * (end - start)

