"""Liquidity pricing: the fee at which a channel's outbound liquidity earns the most.

Pure, no clock. Over a horizon of H hours, at fee f the channel is asked for
V(f) = rate(f) * amount * H msat (modules.demand) and can supply S = stock + inflow * H
(its local balance plus what forwards entering through it bring back, and what its balance
shows coming in from outside the forwards: modules.balance_trend). It sells min(V, S).
Where refills are known to be had at c ppm, what it lacks can be bought: each such msat
earns f - c. The fee chosen maximises

    revenue(f) = f * min(V(f), S) + max(0, f - c) * max(0, V(f) - S)      (/ 1e6, + base fees)

So a channel with plenty of liquidity is priced by demand alone (the *demand price*), and a
channel whose outbound sells faster than it can be refilled is priced up until outflow
matches what can be refilled (the *liquidity price*): no fixed ceiling on what liquidity is
worth but the max-fee option. A channel with no demand is never raised for scarcity.

The stock is read in bands with hysteresis (`stock_band`), so a balance that moves a little
moves no fee: balance noise alone causes no broadcast.
"""
import dataclasses
import functools
import math
from typing import List, Optional, Sequence, Tuple

from modules.demand import DemandCurve

PPM = 1_000_000
FEE_GRID_STEP = 1.06            # candidate fees 6% apart between the bounds
SEARCH_FACTOR = 8.0             # prices are sought within 8x of the fee in force (moves are x2 at most)
# local balance / capacity bands; a band is left only past its edge by BAND_HYSTERESIS
STOCK_BANDS = (0.0, 0.05, 0.10, 0.20, 0.35, 0.50, 0.70, 1.0)
BAND_HYSTERESIS = 0.025


@dataclasses.dataclass(frozen=True)
class Supply:
    stock_msat: int                   # spendable local balance, as banded
    inflow_msat_per_hour: float       # what forwards entering through it bring back
    horizon_hours: float
    refill_cost_ppm: Optional[int] = None   # known price of a refill (None: none assumed)

    @property
    def over_horizon_msat(self) -> float:
        return self.stock_msat + self.inflow_msat_per_hour * self.horizon_hours


@dataclasses.dataclass(frozen=True)
class LiquidityPrice:
    fee_ppm: int                       # the fee that earns the most, liquidity included
    demand_price_ppm: int              # the fee that would earn the most with liquidity to spare
    scarce: bool                       # demand over the horizon exceeds what can be supplied
    demand_msat: float                 # V(fee): asked over the horizon at the chosen fee
    supply_msat: float                 # S
    expected_revenue_msat: float       # over the horizon at the chosen fee
    reason: str


@functools.lru_cache(maxsize=8)
def _all_fees(min_fee_ppm: int, max_fee_ppm: int) -> Tuple[int, ...]:
    fees, f = [], float(max(min_fee_ppm, 1))
    while f < max_fee_ppm:
        fees.append(int(round(f)))
        f *= FEE_GRID_STEP
    fees.append(max_fee_ppm)
    if min_fee_ppm == 0:
        fees.insert(0, 0)
    return tuple(sorted(set(fees)))


def fee_grid(min_fee_ppm: int, max_fee_ppm: int, around_ppm: Optional[int] = None) -> List[int]:
    """Candidate fees between the bounds; with `around_ppm`, only within SEARCH_FACTOR of it
    (the same candidates whatever the fee: only fewer of them)."""
    fees = _all_fees(min_fee_ppm, max_fee_ppm)
    if around_ppm is not None:
        lo, hi = max(around_ppm, 1) / SEARCH_FACTOR, max(around_ppm, 1) * SEARCH_FACTOR
        near = [f for f in fees if lo <= f <= hi]
        if near:
            return near
    return list(fees)


@dataclasses.dataclass(frozen=True)
class DemandOnGrid:
    """A demand curve evaluated once on the candidate fees (expected arrivals per hour)."""
    fees_ppm: Tuple[int, ...]
    rates_per_hour: Tuple[float, ...]
    amount_msat: int

    @classmethod
    def of(cls, curve: DemandCurve, grid: Sequence[int]) -> "DemandOnGrid":
        return cls(tuple(grid), tuple(curve.rates_per_hour(grid)), max(curve.mean_amount_msat, 1))

    def rate_at(self, fee_ppm: int) -> float:
        i = min(range(len(self.fees_ppm)), key=lambda k: abs(self.fees_ppm[k] - fee_ppm))
        return self.rates_per_hour[i]

    def revenue_at(self, fee_ppm: int, supply: "Supply", base_fee_msat: int) -> float:
        """Expected revenue over the horizon at a fee (its nearest candidate's demand)."""
        return _revenue(fee_ppm, self.rate_at(fee_ppm), self.amount_msat, supply.over_horizon_msat,
                        supply.horizon_hours, base_fee_msat, supply.refill_cost_ppm)[0]


def revenue_of_curve(curve: DemandCurve, fee_ppm: float, supply: "Supply", base_fee_msat: int) -> float:
    """Expected revenue over the horizon at any fee, what the channel can supply counted: a
    forward not made at a high fee keeps its liquidity for later."""
    return _revenue(fee_ppm, curve.rate_per_hour(fee_ppm), max(curve.mean_amount_msat, 1),
                    supply.over_horizon_msat, supply.horizon_hours, base_fee_msat, supply.refill_cost_ppm)[0]


def revenue_at_rate(fee_ppm: int, rate_per_hour: float, amount_msat: int, supply: "Supply",
                    base_fee_msat: int) -> float:
    """Expected revenue over the horizon at a fee whose arrival rate is known (not from a curve)."""
    return _revenue(fee_ppm, rate_per_hour, max(amount_msat, 1), supply.over_horizon_msat, supply.horizon_hours,
                    base_fee_msat, supply.refill_cost_ppm)[0]


def _revenue(fee_ppm: int, rate: float, amount_msat: int, supply_msat: float, horizon_hours: float,
             base_fee_msat: int, refill_cost_ppm: Optional[int]) -> Tuple[float, float]:
    """(expected revenue over the horizon, demand V) at one fee."""
    demand = rate * amount_msat * horizon_hours
    sold = min(demand, supply_msat)
    per_msat = fee_ppm / PPM + base_fee_msat / amount_msat
    revenue = sold * per_msat
    if refill_cost_ppm is not None and demand > sold and fee_ppm > refill_cost_ppm:
        revenue += (demand - sold) * (per_msat - refill_cost_ppm / PPM)
    return revenue, demand


def best_fee(demand: DemandOnGrid, supply_msat: float, horizon_hours: float, base_fee_msat: int,
             refill_cost_ppm: Optional[int] = None, lo_ppm: int = 0, hi_ppm: Optional[int] = None
             ) -> Tuple[int, float, float]:
    """(fee, expected revenue, demand V) of the best candidate fee within [lo, hi]."""
    best = (demand.fees_ppm[0], -1.0, 0.0)
    for fee, rate in zip(demand.fees_ppm, demand.rates_per_hour):
        if fee < lo_ppm or (hi_ppm is not None and fee > hi_ppm):
            continue
        revenue, asked = _revenue(fee, rate, demand.amount_msat, supply_msat, horizon_hours,
                                  base_fee_msat, refill_cost_ppm)
        if revenue > best[1] * 1.0001:   # ties go to the lower fee: more sold, same earned
            best = (fee, revenue, asked)
    return best


def price_liquidity(demand: DemandOnGrid, supply: Supply, base_fee_msat: int, has_demand: bool
                    ) -> LiquidityPrice:
    demand_fee, demand_rev, _ = best_fee(demand, math.inf, supply.horizon_hours, base_fee_msat)
    s = supply.over_horizon_msat
    if not has_demand:
        return LiquidityPrice(demand_fee, demand_fee, False, 0.0, s, demand_rev,
                              f"no arrivals in the evidence: priced by demand alone, never raised "
                              f"for scarcity")
    fee, revenue, asked_at_fee = best_fee(demand, s, supply.horizon_hours, base_fee_msat,
                                          supply.refill_cost_ppm)
    days = supply.horizon_hours / 24
    asked = demand.rate_at(demand_fee) * demand.amount_msat * supply.horizon_hours
    scarce = fee > demand_fee
    if scarce:
        refill = (f", refills at ~{supply.refill_cost_ppm} ppm" if supply.refill_cost_ppm is not None
                  else ", no refill price known")
        reason = (f"liquidity price {fee} ppm (demand alone {demand_fee}): at {demand_fee} ppm it would be "
                  f"asked {asked / 1e6:,.0f} k sat in {days:g} days, it can supply {s / 1e6:,.0f} k sat "
                  f"(local {supply.stock_msat / 1e6:,.0f} k + inflow "
                  f"{supply.inflow_msat_per_hour * 24 / 1e6:,.0f} k/day){refill}")
    else:
        reason = (f"demand price {fee} ppm: asked {asked / 1e6:,.0f} k sat in {days:g} days, "
                  f"supply {s / 1e6:,.0f} k sat: liquidity to spare")
    return LiquidityPrice(fee, demand_fee, scarce, asked_at_fee, s, revenue, reason)


def held_at_fee_in_force(price: LiquidityPrice, fee_in_force_ppm: int, demand: DemandOnGrid,
                         supply: Supply, base_fee_msat: int) -> LiquidityPrice:
    """The price of a channel whose balance holds at the fee in force because something
    outside the forwards refills it (modules.balance_trend). That inflow is read from what
    it sold at this fee, so at any lower fee it looks short, and each reading would raise
    the fee a little more (a ratchet with no evidence behind it). Scarcity may hold such a
    channel at its fee, not raise it: the price is kept between the demand price and the
    fee in force."""
    if not price.scarce or price.fee_ppm <= fee_in_force_ppm:
        return price
    fee = max(price.demand_price_ppm, fee_in_force_ppm)
    return dataclasses.replace(price, fee_ppm=fee, scarce=fee > price.demand_price_ppm,
                               expected_revenue_msat=demand.revenue_at(fee, supply, base_fee_msat),
                               reason=f"{price.reason}; held at {fee} ppm: its balance holds from "
                                      f"outside the forwards at {fee_in_force_ppm} ppm, scarcity does not "
                                      f"raise it")


def refill_value_msat(demand: DemandOnGrid, supply: Supply, amount_msat: int, base_fee_msat: int
                      ) -> Tuple[float, int]:
    """(what `amount_msat` more local balance earns over the horizon, the fee it sells at):
    the channel's best revenue with the refill, less without; no further refills assumed."""
    _, without, _ = best_fee(demand, supply.over_horizon_msat, supply.horizon_hours, base_fee_msat)
    fee, with_refill, _ = best_fee(demand, supply.over_horizon_msat + amount_msat, supply.horizon_hours,
                                   base_fee_msat)
    return max(0.0, with_refill - without), fee


def stock_band(local_ratio: float, previous: Optional[int]) -> int:
    """The band (index into STOCK_BANDS) the balance is in, sticking to the previous band
    until the balance is BAND_HYSTERESIS past its edge."""
    ratio = min(max(local_ratio, 0.0), 1.0)
    band = max(i for i in range(len(STOCK_BANDS) - 1) if STOCK_BANDS[i] <= ratio) \
        if ratio < 1.0 else len(STOCK_BANDS) - 2
    if previous is None or previous == band or not 0 <= previous < len(STOCK_BANDS) - 1:
        return band
    lo, hi = STOCK_BANDS[previous], STOCK_BANDS[previous + 1]
    if lo - BAND_HYSTERESIS <= ratio <= hi + BAND_HYSTERESIS:
        return previous
    return band


def banded_stock_msat(band: int, capacity_msat: int) -> int:
    """A band's stock: its middle (the lowest band: its top edge's half, so empty reads empty-ish)."""
    lo, hi = STOCK_BANDS[band], STOCK_BANDS[band + 1]
    return int(capacity_msat * (lo + hi) / 2)
