"""A routing market for the economic benches and the demo: who wants to forward through
which channel, at what fee, and whether the node's balances let them.

A market is a set of channels, each with a demand curve (forwards per hour that would leave
through it, a function of its fee; for some channels a second curve after a mid-run shift),
a mean forward amount, a role (source: heavy outbound demand, little coming in; sink: the
reverse; balanced) and an inbound weight (how often a forward enters the node through it).

* Arrivals (common random numbers): each channel's candidate forwards are a Poisson process
  at a rate that bounds its demand at every fee, drawn once per seed with their amounts,
  an acceptance uniform u and an entry uniform v. A candidate becomes a forward when
  u < demand(fee in force) / bound (thinning), so two policies run on the same seed differ
  only where their decisions differ.
* A forward of `a` msat out through X at X's fee enters through Y, chosen with v by inbound
  weight among the other channels that can receive a + fee. It needs `a` of X's spendable
  balance (reserve and commitment-fee buffer held back by the same rule as the simulated
  node's spendable_msat, simnode.state.balance_holdbacks): then X's local falls by a and Y's
  rises by a + fee. If X cannot send it, the node refuses it: a `local_failed` forward with
  failcode 4103 (WIRE_TEMPORARY_CHANNEL_FAILURE), in_channel Y, out_channel X, in_msat a + fee;
  the fee is lost. If no channel can receive it, the sender never reaches the node: nothing
  is recorded and it counts as lost demand (`no_entry`).
* The max-HTLC X advertises (`htlc_max_out`, kept in step with the node's by market_run)
  is what senders plan with: a forward larger than it is never tried through X (counted as
  `over_max`, lost demand the node never sees; a sender that would split it into parts is
  not modelled). Entering through Y is bounded by the peer's own max (`htlc_max_in`, the
  channel's initial one: peers never change theirs here). Only where balances move: the
  dense market's channels forward anything, whatever their balance.
* A market that does not drain (the dense one) moves no balances: every accepted forward
  settles and enters by weight among all other channels.

* The routes worlds ("routes", "routes-old"; Market.routes): demand is competing routes
  (RouteDemand). Each candidate carries its reservation fee, drawn once per seed: its
  alternative route's cost (log-normal around the competitor's price at that time, which
  drifts day by day and moves at mid-run on a third of the channels), or for a captive
  sender its own budget; it takes X only at a fee below it. A daily cycle thins the
  candidates as they are drawn. Failure memory is played: after X refused a forward for
  balance, a candidate tries X only with probability 1 - 0.5 exp(-dt / 2 h) (its uniform w).
  A channel with opens_s takes no forward out or in before then.

Times are seconds relative to the start of the scored run (the pre-history is negative);
amounts msat; fees ppm. The pure simulation here (MarketSim) has no SQLite and no node: the
baselines search fee grids with it. simnode/market_run.py drives the same MarketSim over a
SimNode with the real plugin.
"""
import bisect
import dataclasses
import math
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .state import NodeState, balance_holdbacks, make_pubkey

HOUR, DAY = 3600, 86400
SAT, PPM = 1000, 1_000_000
SOURCE, SINK, BALANCED = "source", "sink", "balanced"
SETTLED, LOCAL_FAILED = "settled", "local_failed"
AMOUNT_SIGMA = 0.5                   # log-normal spread of one forward's amount
MAX_FEE_PPM = 2500                   # the plugin's default max-fee-ppm: grids stop here


# --- demand curves: forwards per hour as a function of the fee ------------------------------------
@dataclasses.dataclass(frozen=True)
class ExponentialDemand:
    """rate_at_zero * exp(-f / scale_ppm); revenue (rate x fee) peaks at f = scale_ppm."""
    rate_at_zero: float
    scale_ppm: float

    def per_hour(self, fee_ppm: float) -> float:
        return self.rate_at_zero * math.exp(-fee_ppm / self.scale_ppm)

    def rescaled(self, factor: float) -> "ExponentialDemand":
        return ExponentialDemand(self.rate_at_zero, self.scale_ppm * factor)

    def describe(self) -> str:
        return f"exp(A={self.rate_at_zero:.2f}/h, scale {self.scale_ppm:.0f})"


@dataclasses.dataclass(frozen=True)
class LogisticDemand:
    """rate_at_zero / (1 + exp((f - cutoff) / width)): senders switch to a competitor priced
    near cutoff_ppm; a narrow width is a cliff."""
    rate_at_zero: float
    cutoff_ppm: float
    width_ppm: float

    def per_hour(self, fee_ppm: float) -> float:
        x = (fee_ppm - self.cutoff_ppm) / self.width_ppm
        return 0.0 if x > 700 else self.rate_at_zero / (1.0 + math.exp(x))

    def rescaled(self, factor: float) -> "LogisticDemand":
        return LogisticDemand(self.rate_at_zero, self.cutoff_ppm * factor, self.width_ppm * factor)

    def describe(self) -> str:
        return f"cliff(A={self.rate_at_zero:.2f}/h, at {self.cutoff_ppm:.0f} +-{self.width_ppm:.0f})"


@dataclasses.dataclass(frozen=True)
class UndercutDemand:
    """A competitor opens at cutoff_ppm: the old curve times a logistic cliff there."""
    base: object
    cutoff_ppm: float
    width_ppm: float

    @property
    def rate_at_zero(self) -> float:
        return self.base.rate_at_zero

    def per_hour(self, fee_ppm: float) -> float:
        x = (fee_ppm - self.cutoff_ppm) / self.width_ppm
        return 0.0 if x > 700 else self.base.per_hour(fee_ppm) / (1.0 + math.exp(x))

    def describe(self) -> str:
        return f"{self.base.describe()} undercut at {self.cutoff_ppm:.0f}"


def survival(x: float, median: float, sigma: float) -> float:
    """P(X > x) for X log-normal with this median and log-sigma."""
    if x <= 0:
        return 1.0
    return 0.5 * math.erfc(math.log(x / median) / (sigma * math.sqrt(2.0)))


@dataclasses.dataclass(frozen=True)
class RouteDemand:
    """Senders who could leave through the channel (rate_at_zero per hour, the daily cycle
    averaged out) and take it only when its fee is below their alternative: for most, a
    competing route whose cost is log-normal around competitor_ppm; for a captive share
    without one, their own fee budget (log-normal around budget_ppm). A cheap competitor
    and a captive share make two revenue humps: near the competitor, and near the budget."""
    rate_at_zero: float
    competitor_ppm: float
    sigma: float                     # log-spread of one sender's alternative route cost
    captive_share: float
    budget_ppm: float
    budget_sigma: float

    def per_hour(self, fee_ppm: float) -> float:
        routed = survival(fee_ppm, self.competitor_ppm, self.sigma)
        captive = survival(fee_ppm, self.budget_ppm, self.budget_sigma)
        return self.rate_at_zero * ((1.0 - self.captive_share) * routed + self.captive_share * captive)

    def rescaled(self, factor: float) -> "RouteDemand":
        """The competitor's price moves by factor; the captive senders' budgets do not."""
        return dataclasses.replace(self, competitor_ppm=self.competitor_ppm * factor)

    def describe(self) -> str:
        return (f"routes(A={self.rate_at_zero:.2f}/h, competitor {self.competitor_ppm:.0f} "
                f"x{math.exp(2 * self.sigma):.2f}, captive {100 * self.captive_share:.0f}% "
                f"at {self.budget_ppm:.0f})")


def best_fee(curve, lo: int = 1, hi: int = MAX_FEE_PPM) -> int:
    """The integer fee in [lo, hi] at which rate x fee (expected revenue) is highest."""
    return max(range(lo, hi + 1), key=lambda f: curve.per_hour(f) * f)


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def fee_grid(lo: int = 2, hi: int = MAX_FEE_PPM, step: float = 1.12) -> List[int]:
    """Fees from lo to hi about `step` apart (integers, so the low end is denser)."""
    grid, f = [], float(lo)
    while f < hi:
        grid.append(int(round(f)))
        f *= step
    grid.append(hi)
    return sorted(set(grid))


# --- the market ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ChannelSpec:
    scid: str
    peer_id: str
    capacity_msat: int
    local_msat: int                  # at the start of the pre-history
    role: str
    inbound_weight: float            # share of forwards entering through it
    amount_msat: int                 # mean amount of a forward leaving through it
    curves: Tuple[object, object]    # demand before and after the shift (the same if none)
    start_fee_ppm: int
    refill_ppm: float                # median cost of a rebalance into it
    # routes worlds: the competitor route's median price at the start (for the node's gossip
    # later), its daily log-drift (one step per day from the pre-history's start), and when
    # the channel opens (relative seconds; None: open from the start)
    network_fee_ppm: Optional[int] = None
    competitor_drift: Tuple[float, ...] = ()
    opens_s: Optional[float] = None

    @property
    def shifts(self) -> bool:
        return self.curves[0] != self.curves[1]

    @property
    def bound_per_hour(self) -> float:
        return max(c.rate_at_zero for c in self.curves)

    def expected_msat_per_hour(self, fee_ppm: float, regime: int) -> float:
        return self.curves[regime].per_hour(fee_ppm) * self.amount_msat * fee_ppm / PPM


@dataclasses.dataclass
class Market:
    kind: str
    seed: int
    channels: List[ChannelSpec]
    history_s: float                 # pre-history length (before t = 0, at the start fees)
    run_s: float                     # scored run length
    shift_s: Optional[float]         # the shift, relative to the run's start
    drains: bool
    refill_range_ppm: Tuple[float, float]
    events: List[tuple]              # (t, channel index, amount msat, u, v), time-ordered
    # routes worlds: events are (t, x, amount msat, reservation ppm, v, w) - the sender takes
    # our channel only at a fee below its reservation; w thins arrivals by failure memory
    routes: bool = False
    drifts: bool = False             # demand moves day by day: no per-regime oracle

    def regime(self, t: float) -> int:
        return 0 if self.shift_s is None or t < self.shift_s else 1

    @property
    def days(self) -> float:
        return self.run_s / DAY

    def best_fees(self) -> List[Tuple[int, int]]:
        """Each channel's revenue-maximising fee of its demand curve, per regime."""
        out = []
        for c in self.channels:
            before = best_fee(c.curves[0])
            out.append((before, best_fee(c.curves[1]) if c.shifts else before))
        return out

    def describe(self) -> List[str]:
        best = self.best_fees()
        lines = []
        for c, (b0, b1) in zip(self.channels, best):
            opt = f"{b0}" if b0 == b1 else f"{b0}->{b1}"
            curve = c.curves[0].describe() + (f" -> {c.curves[1].describe()}" if c.shifts else "")
            lines.append(f"{c.scid:>12} {c.role:>8} cap {c.capacity_msat / 1e9:5.2f} M  amount "
                         f"{c.amount_msat / 1e6:7.1f} k  in-weight {c.inbound_weight:5.3f}  rate at best "
                         f"{c.curves[0].per_hour(b0):5.2f}/h  best fee {opt:>9}  refill {c.refill_ppm:5.0f}  "
                         f"{curve}")
        return lines


# Market kinds. rate: forwards per hour at the channel's best fee (at zero fee for dense).
KINDS = {
    "high": dict(channels=12, best=(40, 1500), start_fee=100, refill=(50, 1000), rate=(0.1, 5.0),
                 drains=True, shifted_share=1 / 3),
    "low": dict(channels=12, best=(5, 100), start_fee=50, refill=(5, 80), rate=(0.1, 5.0),
                drains=True, shifted_share=1 / 3),
    "dense": dict(channels=20, best=(40, 1500), start_fee=100, refill=(50, 1000), rate=(1.0, 20.0),
                  drains=False, shifted_share=None),
}
# high without a past to learn from, and with smooth (exponential) curves only
KINDS["high-new"] = dict(KINDS["high"], history_days=0, exponential_only=True)
# competing routes (RouteDemand): rate is senders per hour who could use the channel
KINDS["routes"] = dict(channels=12, competitor=(30, 2000), spread=(1.35, 2.7), captive=(0.02, 0.06),
                       budget_ppm=1200, budget_sigma=0.4, start_fee=100, refill=(50, 1000),
                       rate=(0.15, 6.0), drains=True, shifted_share=1 / 3, history_days=0,
                       amount_sigma=1.0, routes=True, opening_mid_run=0)
KINDS["routes-old"] = dict(KINDS["routes"], channels=15, history_days=14, opening_mid_run=3)
DAILY_CYCLE = 0.6                    # routes: rate x (1 + 0.6 sin(2 pi t / day + phase))
DRIFT_SIGMA = 0.10                   # routes: the competitor's daily log random walk
MEMORY_DEPTH, MEMORY_S = 0.5, 2 * HOUR   # routes: a refusal halves arrivals, fading over ~2 h
ROLE_OUT_SHARE = {SOURCE: (0.15, 0.40), BALANCED: (0.08, 0.20), SINK: (0.02, 0.06)}


def build_market(kind: str, seed: int, days: float = 10, history_days: Optional[float] = None,
                 start_fee_ppm: Optional[int] = None, channels: Optional[int] = None) -> Market:
    """The market of `kind` (one of KINDS) for a seed: same seed, same market. history_days:
    the world's own (14 days, none for high-new and routes) unless given."""
    if kind not in KINDS:
        raise ValueError(f"unknown market {kind!r}: one of {', '.join(KINDS)}")
    spec = KINDS[kind]
    if history_days is None:
        history_days = spec.get("history_days", 14)
    n = channels or spec["channels"]
    start_fee = spec["start_fee"] if start_fee_ppm is None else start_fee_ppm
    rng = random.Random(f"market-{kind}-{seed}")
    run_s = days * DAY
    shift_s = round(run_s / 2 / 600) * 600   # mid-run, on a 10-minute boundary
    if spec.get("routes"):
        return _route_market(rng, kind, seed, n, spec, start_fee, history_days * DAY, run_s, shift_s)
    if spec["drains"]:
        chans = _draining_channels(rng, kind, seed, n, spec, start_fee)
    else:
        chans = _dense_channels(rng, kind, seed, n, spec, start_fee)
    if not any(c.shifts for c in chans):
        shift_s = None
    history_s = history_days * DAY
    return Market(kind, seed, chans, history_s, run_s, shift_s, spec["drains"], spec["refill"],
                  _arrivals(kind, seed, chans, -history_s, run_s))


def custom_market(channels: Sequence[ChannelSpec], seed: int = 1, days: float = 10,
                  history_days: float = 0, shift_day: Optional[float] = None,
                  drains: bool = True, kind: str = "custom") -> Market:
    """A market of hand-made channels (tests, tuning a single case): the same arrivals
    model; the shift, if any channel has one, at shift_day (default mid-run)."""
    run_s = days * DAY
    shift_s = None
    if any(c.shifts for c in channels):
        shift_s = run_s / 2 if shift_day is None else shift_day * DAY
    history_s = history_days * DAY
    refill = (min(c.refill_ppm for c in channels), max(c.refill_ppm for c in channels))
    return Market(kind, seed, list(channels), history_s, run_s, shift_s, drains, refill,
                  _arrivals(kind, seed, channels, -history_s, run_s))


def _ids(kind: str, seed: int, i: int) -> Tuple[str, str]:
    return f"{800000 + 7 * i}x{100 + i}x0", make_pubkey(f"market-{kind}-{seed}-peer-{i}")


def _curve_with_best(rng: random.Random, best_ppm: float, rate_at_best: float,
                     exponential_only: bool = False):
    """An exponential curve (2 in 3, or always) or a logistic cliff whose revenue peaks at
    best_ppm with rate_at_best forwards per hour there."""
    if rng.random() < 2 / 3 or exponential_only:
        return ExponentialDemand(rate_at_best * math.e, best_ppm)
    shape = LogisticDemand(1.0, 1000.0, 1000.0 * rng.uniform(0.08, 0.25))
    peak = best_fee(shape, 1, 2000)                 # the shape's peak scales with its cutoff
    factor = best_ppm / peak
    shape = shape.rescaled(factor)
    return LogisticDemand(rate_at_best / shape.per_hour(best_ppm), shape.cutoff_ppm, shape.width_ppm)


def _shifted(rng: random.Random, curve, best_ppm: float, hi: float):
    """The curve after the shift: its prices halve or double, or a competitor undercuts."""
    kinds = ["halve", "undercut"] + (["double"] if best_ppm * 2 <= hi else [])
    what = rng.choice(kinds)
    if what == "halve":
        return curve.rescaled(0.5)
    if what == "double":
        return curve.rescaled(2.0)
    cut = best_ppm * rng.uniform(0.4, 0.7)
    return UndercutDemand(curve, cut, cut * 0.1)


def _draining_channels(rng, kind, seed, n, spec, start_fee) -> List[ChannelSpec]:
    roles = [(SOURCE, SINK, BALANCED)[i % 3] for i in range(n)]
    rng.shuffle(roles)
    shifted = set(rng.sample(range(n), max(1, round(n * spec["shifted_share"]))))
    lo, hi = spec["best"]
    drafts, out_day = [], []
    for i, role in enumerate(roles):
        capacity = int(log_uniform(rng, 1e6, 1e7)) * SAT
        best = log_uniform(rng, lo, hi)
        rate = log_uniform(rng, *spec["rate"])
        # mean amount from the role's daily outflow at the best fee, so sources drain in days
        daily_out = capacity * rng.uniform(*ROLE_OUT_SHARE[role])
        amount = int(min(max(daily_out / (24 * rate), 1_000 * SAT), capacity / 20)) // SAT * SAT
        curve = _curve_with_best(rng, best, rate, spec.get("exponential_only", False))
        after = _shifted(rng, curve, best, hi * 1.5) if i in shifted else curve
        local = int(capacity * rng.uniform(0.3, 0.7)) // SAT * SAT
        drafts.append((capacity, local, role, amount, (curve, after)))
        out_day.append(rate * 24 * amount)
    inflow = _inflow(rng, roles, [d[0] for d in drafts], out_day)
    total = sum(inflow)
    refill_lo, refill_hi = spec["refill"]
    out = []
    for i, (capacity, local, role, amount, curves) in enumerate(drafts):
        scid, peer = _ids(kind, seed, i)
        out.append(ChannelSpec(scid, peer, capacity, local, role, inflow[i] / total, amount, curves,
                               start_fee, log_uniform(rng, refill_lo, refill_hi)))
    return out


def _inflow(rng, roles: Sequence[str], capacities: Sequence[int], out_day: Sequence[float]) -> List[float]:
    """Where forwards come in: sources get 10-40 % of their outflow back, balanced channels
    80-120 %, sinks (by capacity) the rest, so without rebalancing sources empty, sinks fill."""
    n = len(roles)
    inflow = [0.0] * n
    for i, role in enumerate(roles):
        if role == SOURCE:
            inflow[i] = out_day[i] * rng.uniform(0.1, 0.4)
        elif role == BALANCED:
            inflow[i] = out_day[i] * rng.uniform(0.8, 1.2)
    sinks = [i for i, r in enumerate(roles) if r == SINK]
    rest = max(sum(out_day) - sum(inflow), 0.0)
    sink_cap = sum(capacities[i] for i in sinks) or 1
    for i in sinks:
        inflow[i] = rest * capacities[i] / sink_cap
    return inflow


def _dense_channels(rng, kind, seed, n, spec, start_fee) -> List[ChannelSpec]:
    """The convergence bench's world: known curves, 1-20 forwards/h at zero fee, the last
    channel undercut by a competitor at mid-run; balances do not move."""
    lo, hi = spec["best"]
    out = []
    for i in range(n):
        rate = log_uniform(rng, *spec["rate"])
        if i == n - 1:
            curves = (ExponentialDemand(rate, 600.0), LogisticDemand(rate, 200.0, 30.0))
        elif i % 3 == 2:
            cutoff = log_uniform(rng, 60, 1500)
            c = LogisticDemand(rate, cutoff, cutoff * rng.uniform(0.08, 0.25))
            curves = (c, c)
        else:
            c = ExponentialDemand(rate, log_uniform(rng, lo, hi))
            curves = (c, c)
        capacity = int(log_uniform(rng, 2e6, 2e7)) * SAT
        local = int(capacity * rng.uniform(0.4, 0.9)) // SAT * SAT
        amount = int(log_uniform(rng, 1e5, 2e6)) * SAT
        scid, peer = _ids(kind, seed, i)
        out.append(ChannelSpec(scid, peer, capacity, local, BALANCED, 1.0 / n, amount, curves,
                               start_fee, log_uniform(rng, *spec["refill"])))
    return out


def _arrivals(kind, seed, chans: Sequence[ChannelSpec], start: float, end: float) -> List[tuple]:
    """Every channel's candidate forwards from its own stream, merged in time order."""
    events = []
    for i, c in enumerate(chans):
        rng = random.Random(f"arrivals-{kind}-{seed}-{i}")
        per_s = c.bound_per_hour / HOUR
        mu = math.log(c.amount_msat) - AMOUNT_SIGMA ** 2 / 2
        t = start
        while True:
            t += rng.expovariate(per_s)
            if t >= end:
                break
            amount = max(SAT, int(rng.lognormvariate(mu, AMOUNT_SIGMA)))
            events.append((t, i, amount, rng.random(), rng.random()))
    events.sort()
    return events


# --- the routes worlds ------------------------------------------------------------------------
def _route_market(rng, kind, seed, n, spec, start_fee, history_s, run_s, shift_s) -> Market:
    days_total = int(math.ceil((history_s + run_s) / DAY)) + 1
    chans = _route_channels(rng, kind, seed, n, spec, start_fee, days_total)
    opening = spec.get("opening_mid_run", 0)
    if opening:   # the last channels open at mid-run: no demand, no entries before it
        chans[-opening:] = [dataclasses.replace(c, opens_s=float(shift_s)) for c in chans[-opening:]]
    events = _route_arrivals(kind, seed, chans, -history_s, run_s, shift_s, spec)
    return Market(kind, seed, chans, history_s, run_s, shift_s, True, spec["refill"], events,
                  routes=True, drifts=True)


def _route_channels(rng, kind, seed, n, spec, start_fee, days_total) -> List[ChannelSpec]:
    """Draining channels (roles as in high) whose demand is competing routes (RouteDemand);
    a third see the competitor's price move x0.5-x2 at mid-run."""
    roles = [(SOURCE, SINK, BALANCED)[i % 3] for i in range(n)]
    rng.shuffle(roles)
    shifted = set(rng.sample(range(n), max(1, round(n * spec["shifted_share"]))))
    drafts, out_day = [], []
    for i, role in enumerate(roles):
        capacity = int(log_uniform(rng, 1e6, 1e7)) * SAT
        spread = rng.uniform(*spec["spread"])
        curve = RouteDemand(log_uniform(rng, *spec["rate"]), log_uniform(rng, *spec["competitor"]),
                            math.log(spread) / 2, rng.uniform(*spec["captive"]),
                            spec["budget_ppm"] * rng.lognormvariate(0.0, 0.2), spec["budget_sigma"])
        after = curve
        if i in shifted:
            after = curve.rescaled(log_uniform(rng, 1.4, 2.0) ** rng.choice((-1, 1)))
        # the bulk of the flow is the routed senders': amounts sized by the lower hump's rate
        routed_hump = best_fee(curve, 1, int(curve.competitor_ppm * spread) + 1)
        rate_at_best = curve.per_hour(routed_hump)
        daily_out = capacity * rng.uniform(*ROLE_OUT_SHARE[role])
        amount = int(min(max(daily_out / (24 * rate_at_best), 1_000 * SAT), capacity / 20)) // SAT * SAT
        local = int(capacity * rng.uniform(0.3, 0.7)) // SAT * SAT
        drift = [0.0]
        for _ in range(days_total):
            drift.append(drift[-1] + rng.gauss(0.0, DRIFT_SIGMA))
        drafts.append((capacity, local, role, amount, (curve, after), tuple(drift)))
        out_day.append(rate_at_best * 24 * amount)
    inflow = _inflow(rng, roles, [d[0] for d in drafts], out_day)
    total = sum(inflow)
    out = []
    for i, (capacity, local, role, amount, curves, drift) in enumerate(drafts):
        scid, peer = _ids(kind, seed, i)
        out.append(ChannelSpec(scid, peer, capacity, local, role, inflow[i] / total, amount, curves,
                               start_fee, log_uniform(rng, *spec["refill"]),
                               network_fee_ppm=int(round(curves[0].competitor_ppm)),
                               competitor_drift=drift))
    return out


def competitor_ppm_at(market: "Market", x: int, t: float) -> float:
    """The competitor route's median price for channel x at relative time t: its regime's
    price times the daily drift (one step per day since the pre-history's start)."""
    c = market.channels[x]
    day = int((t + market.history_s) // DAY)
    return c.curves[market.regime(t)].competitor_ppm * math.exp(c.competitor_drift[day])


def _route_arrivals(kind, seed, chans, start, end, shift_s, spec) -> List[tuple]:
    """Per channel, the senders who could use it: a Poisson process thinned by the daily cycle,
    each with its reservation fee (its alternative route's cost at that time, or for a captive
    sender its budget), amount (log-normal, heavier-tailed), entry uniform v and memory uniform w."""
    sigma_a = spec["amount_sigma"]
    market = Market(kind, seed, chans, -start, end, shift_s, True, spec["refill"], [])
    events = []
    for i, c in enumerate(chans):
        rng = random.Random(f"route-arrivals-{kind}-{seed}-{i}")
        curve = c.curves[0]
        phase = rng.uniform(0.0, 2 * math.pi)
        peak_per_s = curve.rate_at_zero * (1 + DAILY_CYCLE) / HOUR
        mu = math.log(c.amount_msat) - sigma_a ** 2 / 2
        t = start if c.opens_s is None else max(start, c.opens_s)
        while True:
            t += rng.expovariate(peak_per_s)
            if t >= end:
                break
            cycle, captive, alt = rng.random(), rng.random(), rng.gauss(0.0, 1.0)
            amount = max(SAT, int(rng.lognormvariate(mu, sigma_a)))
            v, w = rng.random(), rng.random()
            if cycle * (1 + DAILY_CYCLE) >= 1 + DAILY_CYCLE * math.sin(2 * math.pi * t / DAY + phase):
                continue
            if captive < curve.captive_share:
                reservation = curve.budget_ppm * math.exp(curve.budget_sigma * alt)
            else:
                reservation = competitor_ppm_at(market, i, t) * math.exp(curve.sigma * alt)
            events.append((t, i, amount, reservation, v, w))
    events.sort()
    return events


def memory_factor(since_refusal_s: float) -> float:
    """Routes worlds: the share of senders still trying a channel since its last refusal for
    balance (the rest route around it for a while)."""
    return 1.0 - MEMORY_DEPTH * math.exp(-since_refusal_s / MEMORY_S)


def channel_records(market: Market) -> List[dict]:
    """The channels as the simulated node holds them (reserves, HTLC limits), for a
    simulation without a node: the same rule decides what fits."""
    state = NodeState()
    return [state.channel(state.add_channel(c.capacity_msat // SAT, c.local_msat // SAT, c.start_fee_ppm,
                                            0, "local", c.peer_id, c.scid))
            for c in market.channels]


# --- the simulation -------------------------------------------------------------------------------
Recorder = Callable[[str, float, int, int, int, int], None]   # (status, t, out X, in Y, amount, fee)


class MarketSim:
    """Plays a market's arrivals over the channels' balances at the fees in `fee_ppm`.

    The caller sets fee_ppm / fee_base_msat (and local_msat, when something else such as
    sling moved balances) between calls to advance(); recorder, if given, hears of every
    forward the node sees (settled or local_failed).
    """

    def __init__(self, market: Market, records: Sequence[dict], recorder: Optional[Recorder] = None):
        self.market = market
        self.n = n = len(market.channels)
        self.recorder = recorder
        self.capacity = [r["capacity_msat"] for r in records]
        self.local_msat = [r["local_msat"] for r in records]
        holds = [balance_holdbacks(r) for r in records]
        self.held_local = [h[0] for h in holds]
        self.held_remote = [h[1] for h in holds]
        self.htlc_max_in = [h[2] for h in holds]      # the peer's, for forwards entering
        self.htlc_max_out = [h[2] for h in holds]     # ours, advertised: senders plan with it
        self.weight = [c.inbound_weight for c in market.channels]
        self.fee_ppm = [c.start_fee_ppm for c in market.channels]
        self.fee_base_msat = [0] * n
        self.t = -market.history_s
        self.pos = 0
        # running totals per channel (out: as the outgoing channel)
        self.earned_msat = [0] * n
        self.settled = [0] * n
        self.out_msat = [0] * n
        self.in_msat = [0] * n
        self.arrived = [0] * n          # accepted at the fee in force
        self.failed = [0] * n           # refused here: not enough balance (local_failed)
        self.failed_fee_msat = [0] * n
        self.no_entry = [0] * n         # no channel could receive it: never reached the node
        self.over_max = [0] * n         # above X's advertised max-HTLC: never tried through X
        # routes worlds: each channel's last refusal for balance (failure memory), opening time
        self.last_refusal_s = [-math.inf] * n
        self.opens_s = [-math.inf if c.opens_s is None else c.opens_s for c in market.channels]
        self._p_cache: Dict[tuple, float] = {}
        self._cums = [self._cum_without(x) for x in range(n)]   # entry weights, x itself left out
        # earnings over time, off unless record_earnings() was called (the demo's plot)
        self.earnings: List[Tuple[float, int]] = []
        self._sample_s: Optional[float] = None
        self._next_sample = 0.0
        self._earned_base = 0

    def record_earnings(self, every_s: float) -> None:
        """From now on, every `every_s` of simulated time (on multiples of it), append
        (t, fees earned since this call, msat, all channels) to `earnings`; it starts with
        (now, 0). For one forward pass: restore() does not rewind it."""
        if every_s <= 0:
            raise ValueError("every_s must be positive")
        self._sample_s = every_s
        self._next_sample = (math.floor(self.t / every_s) + 1) * every_s
        self._earned_base = sum(self.earned_msat)
        self.earnings = [(self.t, 0)]

    def _cum_without(self, x: int) -> List[float]:
        cum, total = [], 0.0
        for j, w in enumerate(self.weight):
            total += 0.0 if j == x else w
            cum.append(total)
        return cum

    def accept_probability(self, x: int, fee_ppm: int, regime: int) -> float:
        key = (x, fee_ppm, regime)
        p = self._p_cache.get(key)
        if p is None:
            c = self.market.channels[x]
            p = self._p_cache[key] = c.curves[regime].per_hour(fee_ppm) / c.bound_per_hour
        return p

    COUNTERS = ("earned_msat", "settled", "out_msat", "in_msat", "arrived", "failed", "failed_fee_msat",
                "no_entry", "over_max")

    def snapshot(self) -> tuple:
        """Where the simulation stands (time, balances, totals), to replay from there."""
        return (self.t, self.pos, list(self.local_msat), [list(getattr(self, k)) for k in self.COUNTERS],
                list(self.last_refusal_s))

    def restore(self, snap: tuple) -> None:
        self.t, self.pos, local, counters, refusals = snap
        self.local_msat = list(local)
        self.last_refusal_s = list(refusals)
        for k, values in zip(self.COUNTERS, counters):
            setattr(self, k, list(values))

    def advance(self, until: float) -> None:
        """Plays every arrival before `until` (relative seconds)."""
        shift, every = self.market.shift_s, self._sample_s
        while self.t < until:
            end = until
            if shift is not None and self.t < shift < until:
                end = shift
            if every is not None and self._next_sample < end:
                end = self._next_sample
            self._play(end, self.market.regime(self.t))
            self.t = end
            if every is not None and end >= self._next_sample:
                self.earnings.append((end, sum(self.earned_msat) - self._earned_base))
                self._next_sample += every

    def _play(self, end: float, regime: int) -> None:
        if self.market.routes:
            self._play_routes(end)
            return
        n, events = self.n, self.market.events
        ppm, base = self.fee_ppm, self.fee_base_msat
        p = [self.accept_probability(x, ppm[x], regime) for x in range(n)]
        local, cap, held_l, held_r, hmax, hmax_out = (self.local_msat, self.capacity, self.held_local,
                                                      self.held_remote, self.htlc_max_in, self.htlc_max_out)
        weight, cums, record, drains = self.weight, self._cums, self.recorder, self.market.drains
        arrived, failed, failed_fee, no_entry = self.arrived, self.failed, self.failed_fee_msat, self.no_entry
        settled, earned, out_msat, in_msat = self.settled, self.earned_msat, self.out_msat, self.in_msat
        last = n - 1
        i, count = self.pos, len(events)
        while i < count:
            t, x, a, u, v = events[i]
            if t >= end:
                break
            i += 1
            if u >= p[x]:
                continue
            if drains and a > hmax_out[x]:
                self.over_max[x] += 1
                continue
            arrived[x] += 1
            fee = base[x] + a * ppm[x] // PPM
            need = a + fee
            # the sender's first try: an entry by weight among our other channels
            cum = cums[x]
            r = v * cum[-1]
            y = bisect.bisect_right(cum, r)
            if y > last:
                y = last
            if drains:
                if cap[y] - local[y] - held_r[y] < need or need > hmax[y]:
                    y = self._retry_entry(x, y, r, need)
                    if y < 0:
                        no_entry[x] += 1
                        continue
                if local[x] - held_l[x] < a:
                    failed[x] += 1
                    failed_fee[x] += fee
                    if record is not None:
                        record(LOCAL_FAILED, t, x, y, a, fee)
                    continue
                local[x] -= a
                local[y] += need
            settled[x] += 1
            earned[x] += fee
            out_msat[x] += a
            in_msat[y] += need
            if record is not None:
                record(SETTLED, t, x, y, a, fee)
        self.pos = i

    def _play_routes(self, end: float) -> None:
        """The routes worlds' arrivals: a sender takes X when its fee is below the sender's
        reservation, and avoids X for a while after X refused a forward for balance."""
        events, ppm, base = self.market.events, self.fee_ppm, self.fee_base_msat
        local, cap, held_l, held_r, hmax, hmax_out = (self.local_msat, self.capacity, self.held_local,
                                                      self.held_remote, self.htlc_max_in, self.htlc_max_out)
        cums, record, refused, opens = self._cums, self.recorder, self.last_refusal_s, self.opens_s
        last = self.n - 1
        i, count = self.pos, len(events)
        while i < count:
            t, x, a, reservation, v, w = events[i]
            if t >= end:
                break
            i += 1
            if w >= 1.0 - MEMORY_DEPTH and w >= memory_factor(t - refused[x]):
                continue                       # routed around X since its last refusal
            if ppm[x] >= reservation:
                continue                       # the alternative (or the budget) wins
            if a > hmax_out[x]:
                self.over_max[x] += 1
                continue
            self.arrived[x] += 1
            fee = base[x] + a * ppm[x] // PPM
            need = a + fee
            cum = cums[x]
            r = v * cum[-1]
            y = min(bisect.bisect_right(cum, r), last)
            if cap[y] - local[y] - held_r[y] < need or need > hmax[y] or opens[y] > t:
                y = self._retry_entry(x, y, r, need, t)
                if y < 0:
                    self.no_entry[x] += 1
                    continue
            if local[x] - held_l[x] < a:
                self.failed[x] += 1
                self.failed_fee_msat[x] += fee
                refused[x] = t
                if record is not None:
                    record(LOCAL_FAILED, t, x, y, a, fee)
                continue
            local[x] -= a
            local[y] += need
            self.settled[x] += 1
            self.earned_msat[x] += fee
            self.out_msat[x] += a
            self.in_msat[y] += need
            if record is not None:
                record(SETTLED, t, x, y, a, fee)
        self.pos = i

    def _retry_entry(self, x: int, first: int, r: float, need: int, t: Optional[float] = None) -> int:
        """The first entry was full: the sender retries by weight among the channels with
        room (with the position of r inside the first pick's slot, again uniform), so the
        entry is drawn by weight among the channels with room. -1: none has room."""
        cum, weight = self._cums[x], self.weight
        v = (r - (cum[first - 1] if first else 0.0)) / weight[first]
        local, cap, held_r, hmax = self.local_msat, self.capacity, self.held_remote, self.htlc_max_in
        fits = [j for j in range(self.n)
                if j != x and cap[j] - local[j] - held_r[j] >= need and need <= hmax[j]
                and (t is None or self.opens_s[j] <= t)]
        if not fits:
            return -1
        left = v * sum(weight[j] for j in fits)
        for j in fits:
            left -= weight[j]
            if left <= 0.0:
                return j
        return fits[-1]

    def totals(self) -> Dict[str, List[int]]:
        return {k: list(getattr(self, k)) for k in self.COUNTERS}


def history_snapshot(market: Market, records: Optional[Sequence[dict]] = None,
                     recorder: Optional[Recorder] = None) -> MarketSim:
    """A MarketSim that has played the pre-history at the start fees (t = 0 now)."""
    sim = MarketSim(market, records or channel_records(market), recorder)
    sim.advance(0.0)
    return sim


def expected_msat(market: Market, x: int, timeline: Sequence[Tuple[float, int]], start: float,
                  end: float) -> float:
    """Expected fees of channel x over [start, end) at the fees of `timeline` ((t, fee in force
    from t), sorted), from its demand curves alone: balances and noise left out. The dense
    market's convergence figure, comparable with the old convergence bench."""
    c = market.channels[x]
    cuts = sorted({start, end} | {t for t, _ in timeline if start < t < end}
                  | ({market.shift_s} if market.shift_s is not None and start < market.shift_s < end else set()))
    total = 0.0
    for a, b in zip(cuts, cuts[1:]):
        fee = next((f for t, f in reversed(timeline) if t <= a), timeline[0][1])
        total += c.expected_msat_per_hour(fee, market.regime(a)) * (b - a) / HOUR
    return total
