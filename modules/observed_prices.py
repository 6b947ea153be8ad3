"""What the fees a channel has had actually earned: a check on the demand model that assumes
no curve shape.

Pure, no clock. The demand posterior (modules.demand) is a mixture of exponential curves,
fitted most closely near the fee in force. Demand shaped by competing routes is not like
that: flat below the competitors' price, a cliff there, and for some channels a second hump
from senders with no alternative, who pay up to their own budget. A curve fitted near one
hump cannot see the other. But every fee the channel has been seen at is a measurement of
its own: arrivals over exposure hours. So the stage takes, among the fees it has evidence
at, the one whose *cautious* revenue (the rate at the CAUTIOUS_QUANTILE of its Gamma
posterior, what the channel can supply counted) beats the model's price by WIN_MARGIN, and
prices there; otherwise the model's price stands.

A fee qualifies with MIN_HOURS of (decay-weighted) exposure and MIN_ARRIVALS arrivals: one
lucky forward at a high fee is no hump. Where the model's price lies beyond every fee seen
(more than EXTRAPOLATION_FACTOR outside their range), its claim there is an extrapolation of
its assumed shape: the comparison takes the model's revenue at the nearest fee seen instead.
"""
import dataclasses
import math
from typing import Callable, Optional, Sequence

from modules.evidence import PriceObservation
from modules.liquidity import LiquidityPrice, Supply, revenue_at_rate

MIN_HOURS = 24.0
MIN_ARRIVALS = 3.0
CAUTIOUS_QUANTILE_Z = -0.8416     # the 20 % quantile of the rate's posterior
WIN_MARGIN = 0.10                 # an observed fee must earn 10 % more than the model's price
EXTRAPOLATION_FACTOR = 1.5
RATE_PRIOR_SHAPE, RATE_PRIOR_HOURS = 0.5, 1.0   # as modules.demand's Gamma prior


def cautious_rate_per_hour(arrivals: float, hours: float) -> float:
    """The rate's 20 % quantile under a Gamma(a + n, b + h) posterior (Wilson-Hilferty)."""
    shape = RATE_PRIOR_SHAPE + arrivals
    c = 1.0 / (9.0 * shape)
    cube = max(0.0, 1.0 - c + CAUTIOUS_QUANTILE_Z * math.sqrt(c))
    return shape * cube ** 3 / (RATE_PRIOR_HOURS + hours)


def best_observed(observations: Sequence[PriceObservation], amount_msat: int, supply: Supply,
                  base_fee_msat: int, min_fee_ppm: int, max_fee_ppm: int
                  ) -> Optional[tuple]:
    """(fee, cautious revenue over the horizon, observation) of the best-earning fee seen, or None."""
    best = None
    for o in observations:
        if o.hours < MIN_HOURS or o.arrivals < MIN_ARRIVALS or not min_fee_ppm <= o.fee_ppm <= max_fee_ppm:
            continue
        rate = cautious_rate_per_hour(o.arrivals, o.hours)
        revenue = revenue_at_rate(o.fee_ppm, rate, amount_msat, supply, base_fee_msat)
        if best is None or revenue > best[1]:
            best = (o.fee_ppm, revenue, o)
    return best


def model_claim_msat(price: LiquidityPrice, seen_fees_ppm: Sequence[int],
                     revenue_at: Callable[[int], float]) -> float:
    """What the model's price is credited with against a measurement: its own expected revenue,
    or, where it extrapolates beyond every fee seen, the model's revenue at the nearest one."""
    lo, hi = min(seen_fees_ppm), max(seen_fees_ppm)
    if price.fee_ppm * EXTRAPOLATION_FACTOR < lo:
        return min(price.expected_revenue_msat, revenue_at(lo))
    if price.fee_ppm > hi * EXTRAPOLATION_FACTOR:
        return min(price.expected_revenue_msat, revenue_at(hi))
    return price.expected_revenue_msat


def checked_against_observations(price: LiquidityPrice, observations: Sequence[PriceObservation],
                                 amount_msat: int, supply: Supply, base_fee_msat: int,
                                 min_fee_ppm: int, max_fee_ppm: int,
                                 model_revenue_at: Callable[[int], float]) -> LiquidityPrice:
    """The model's price, or the observed fee that cautiously earned clearly more.
    model_revenue_at(fee): the model's expected revenue over the horizon at a fee."""
    seen = best_observed(observations, amount_msat, supply, base_fee_msat, min_fee_ppm, max_fee_ppm)
    if seen is None:
        return price
    fee, revenue, o = seen
    qualified = [x.fee_ppm for x in observations if x.hours >= MIN_HOURS and x.arrivals >= MIN_ARRIVALS]
    claim = model_claim_msat(price, qualified, model_revenue_at)
    if fee == price.fee_ppm or revenue <= claim * (1 + WIN_MARGIN):
        return price
    return dataclasses.replace(
        price, fee_ppm=fee, expected_revenue_msat=revenue,
        reason=(f"{price.reason}; but {fee} ppm, where it was seen {o.arrivals:.1f} arrivals in {o.hours:.0f} h, "
                f"earns more by its own evidence ({revenue / 1e3:,.0f} sat over the horizon, cautiously, against "
                f"{claim / 1e3:,.0f} by the model): priced there"))
