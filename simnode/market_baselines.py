"""What an operator with fixed fees and no rebalancing would have earned on the same market
and the same arrivals (common random numbers), found in hindsight:

* left alone: the start fees, never changed;
* best single static fee: one fee for every channel, the best on a log grid (~12 % steps);
* per-channel static fees in hindsight: coordinate descent over the channels on the same
  grid, starting from the best single fee (a coarse scan of every 4th grid point refined to
  its neighbours, then a second pass of local moves). Channels are coupled through their
  balances (a forward out of X fills the channel it came in through), so this is a
  coordinate-descent approximation of the best fee vector, not a proven optimum; it never
  does worse than the best single fee, where it starts;
* oracle: the same search with one fee per channel and demand regime (before / after the
  shift), starting from the per-channel result: hindsight with the shift known. Not for a
  market whose demand drifts day by day (the routes worlds): oracle_msat 0 there (n/a).

A market whose balances do not drain (dense) has no coupling: each channel's revenue at
each fee is summed directly from its own arrivals, and the three searches are exact.
Every figure is the fees earned over the scored run, in msat, from t = 0 with the balances
the pre-history left.
"""
import bisect
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from .market import PPM, Market, MarketSim, fee_grid, history_snapshot

COARSE_EVERY = 4


@dataclasses.dataclass
class Baselines:
    left_alone_msat: int
    single_fee_ppm: int
    single_msat: int
    hindsight_fees_ppm: List[int]
    hindsight_msat: int
    oracle_fees_ppm: List[Tuple[int, int]]          # (before, after) per channel
    oracle_msat: int
    simulations: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Evaluator:
    """Net earned over the run for a fee plan [(before, after)] per channel, memoised."""

    def __init__(self, market: Market, start: MarketSim):
        self.market = market
        self.sim = start
        self.start = start.snapshot()
        self.earned0 = sum(start.earned_msat)
        self.cache: Dict[tuple, int] = {}
        self.at_shift: Dict[tuple, tuple] = {}    # before-fees -> (state at the shift, earned)
        self.runs = 0

    def __call__(self, plan: Sequence[Tuple[int, int]]) -> int:
        key = tuple(plan)
        got = self.cache.get(key)
        if got is not None:
            return got
        m, sim = self.market, self.sim
        before = tuple(f for f, _ in plan)
        self.runs += 1
        if m.shift_s is None:
            sim.restore(self.start)
        else:   # the state at the shift depends on the fees before it only
            mid = self.at_shift.get(before)
            if mid is None:
                sim.restore(self.start)
                sim.fee_ppm = list(before)
                sim.advance(m.shift_s)
                mid = self.at_shift[before] = sim.snapshot()
                if len(self.at_shift) > 256:
                    self.at_shift.pop(next(iter(self.at_shift)))
            sim.restore(mid)
        sim.fee_ppm = [f for _, f in plan] if m.shift_s is not None else list(before)
        sim.advance(m.run_s)
        got = self.cache[key] = sum(sim.earned_msat) - self.earned0
        return got


def _search(evaluate, plan: List[List[int]], coords: List[Tuple[int, Tuple[int, ...]]],
            grid: List[int], coarse: bool) -> None:
    """Coordinate descent in place. coords: (channel, regimes moved together)."""
    index = {f: i for i, f in enumerate(grid)}

    def value_at(c, regimes, gi):
        trial = [tuple(p) for p in plan]
        fees = list(trial[c])
        for r in regimes:
            fees[r] = grid[gi]
        trial[c] = tuple(fees)
        return evaluate(trial)

    for c, regimes in coords:
        current = index[plan[c][regimes[0]]]
        best_i, best_v = current, value_at(c, regimes, current)
        if coarse:
            for gi in range(0, len(grid), COARSE_EVERY):
                v = value_at(c, regimes, gi)
                if v > best_v:
                    best_i, best_v = gi, v
        centre = best_i
        for d in (-2, -1, 1, 2) if coarse else (-3, -2, -1, 1, 2, 3):
            gi = centre + d
            if 0 <= gi < len(grid):
                v = value_at(c, regimes, gi)
                if v > best_v:
                    best_i, best_v = gi, v
        for r in regimes:
            plan[c][r] = grid[best_i]


def baselines(market: Market, start: Optional[MarketSim] = None,
              grid: Optional[List[int]] = None) -> Baselines:
    """The four references of a market (see the module doc)."""
    grid = grid or fee_grid()
    start = start or history_snapshot(market)
    if not market.drains:
        return _decoupled(market, start, grid)
    evaluate = _Evaluator(market, start)
    n = len(market.channels)
    left = evaluate([(c.start_fee_ppm, c.start_fee_ppm) for c in market.channels])
    single_v, single_f = max((evaluate([(f, f)] * n), -f) for f in grid)
    single_f = -single_f
    plan = [[single_f, single_f] for _ in range(n)]
    both = (0, 1)
    _search(evaluate, plan, [(c, both) for c in range(n)], grid, coarse=True)
    _search(evaluate, plan, [(c, both) for c in range(n)], grid, coarse=False)
    hindsight = [p[0] for p in plan]
    hindsight_v = evaluate([tuple(p) for p in plan])
    if market.drifts:   # demand moves day by day: two fees per channel are no oracle (n/a)
        return Baselines(left, single_f, single_v, hindsight, hindsight_v,
                         [(f, f) for f in hindsight], 0, evaluate.runs)
    shifted = [c for c, ch in enumerate(market.channels) if ch.shifts]
    if market.shift_s is not None:
        _search(evaluate, plan, [(c, (r,)) for c in shifted for r in (1, 0)], grid, coarse=True)
        _search(evaluate, plan, [(c, (0, 1) if c not in shifted else (r,))
                                 for c in range(n) for r in ((1, 0) if c in shifted else (0,))],
                grid, coarse=False)
    oracle_v = evaluate([tuple(p) for p in plan])
    return Baselines(left, single_f, single_v, hindsight, hindsight_v,
                     [tuple(p) for p in plan], oracle_v, evaluate.runs)


def _decoupled(market: Market, start: MarketSim, grid: List[int]) -> Baselines:
    """Balances do not move: each channel's revenue at a fee is its own arrivals' fees."""
    n = len(market.channels)
    # per channel and regime: the run's arrivals sorted by their acceptance uniform
    by = {(x, r): [] for x in range(n) for r in (0, 1)}
    for t, x, a, u, _v in market.events[start.pos:]:
        if t >= market.run_s:
            break
        by[(x, market.regime(t))].append((u, a))
    us, amounts = {}, {}
    for key, rows in by.items():
        rows.sort()
        us[key] = [u for u, _ in rows]
        amounts[key] = [a for _, a in rows]

    def revenue(x: int, r: int, fee: int) -> int:
        p = start.accept_probability(x, fee, r)
        k = bisect.bisect_left(us[(x, r)], p)
        return sum(a * fee // PPM for a in amounts[(x, r)][:k])

    table = {(x, r, f): revenue(x, r, f) for x in range(n) for r in (0, 1) for f in grid}
    starts = [c.start_fee_ppm for c in market.channels]
    left = sum(revenue(x, r, starts[x]) for x in range(n) for r in (0, 1))
    single_v, single_f = max((sum(table[(x, r, f)] for x in range(n) for r in (0, 1)), -f) for f in grid)
    hindsight = [max(grid, key=lambda f: (table[(x, 0, f)] + table[(x, 1, f)], -f)) for x in range(n)]
    hindsight_v = sum(table[(x, 0, f)] + table[(x, 1, f)] for x, f in enumerate(hindsight))
    oracle = [tuple(max(grid, key=lambda f: (table[(x, r, f)], -f)) for r in (0, 1))
              if market.channels[x].shifts else (hindsight[x], hindsight[x]) for x in range(n)]
    oracle_v = sum(table[(x, r, oracle[x][r])] for x in range(n) for r in (0, 1))
    return Baselines(left, -single_f, single_v, hindsight, hindsight_v, oracle, oracle_v, len(table))


def static_run(market: Market, plan: Sequence[Tuple[int, int]], start: Optional[MarketSim] = None,
               earnings_every_s: Optional[float] = None) -> MarketSim:
    """A MarketSim that played the run at fixed fees (before, after the shift) per channel;
    with earnings_every_s, its `earnings` over the run (see MarketSim.record_earnings)."""
    sim = start or history_snapshot(market)
    if earnings_every_s is not None:
        sim.record_earnings(earnings_every_s)
    sim.fee_ppm = [f for f, _ in plan]
    if market.shift_s is not None:
        sim.advance(market.shift_s)
        sim.fee_ppm = [f for _, f in plan]
    sim.advance(market.run_s)
    return sim

