"""What a channel's balance does beyond its forwards: inflow from outside the forwards seen.

Pure, no clock. A channel's local balance moves with the forwards through it (in: up, out:
down), the refills bought into it, and what the plugin cannot see as forwards: payments
received, someone else's circular rebalances, a market whose balances do not move. Supply
(modules.liquidity) counts forward inflow; a channel whose balance holds while its outflow
exceeds that inflow is refilled from outside, and is not short of liquidity.

Between two marks at least MIN_SPAN_HOURS apart:

    outside = (local now - local then) - (forwards in - out, from the hourly rollups)
              - (refills bought into it)

read as a rate and smoothed (HALF_LIFE_HOURS). Only its positive part adds to supply: an
outflow the forwards do not explain (a rebalance out, a payment) already shows in the
balance. Forward flows are counted by hour from the mark's hour on, less what that hour held
when the mark was taken, so partial hours add up exactly.
"""
import dataclasses
import math
from typing import Dict, Iterable, Mapping, Optional, Sequence

from modules.evidence import HOUR_SECONDS
MIN_SPAN_HOURS = 6.0        # refills' ledger and the balance agree within minutes: spans of hours
HALF_LIFE_HOURS = 24.0


@dataclasses.dataclass(frozen=True)
class BalanceMark:
    at: float                       # when it was taken
    local_msat: int                 # the local balance then
    hour: int                       # the hourly rollup under way then ...
    hour_net_msat: int              # ... and its net forward flow (in - out) then
    refilled_msat: int              # refills bought into the channel, all time, then
    outside_msat_per_hour: float = 0.0   # smoothed outside inflow as of `at` (may be < 0)
    capacity_msat: int = 0          # of the channels it sums (a peer's channels may come and go)

    @classmethod
    def from_dict(cls, d: Mapping) -> Optional["BalanceMark"]:
        """As stored (JSON); None when it cannot be read (then the trend starts again)."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError):
            return None

    @property
    def supply_msat_per_hour(self) -> float:
        """What it adds to the channel's supply: its positive part."""
        return max(0.0, self.outside_msat_per_hour)


def observe(mark: Optional[BalanceMark], local_msat: int, capacity_msat: int,
            net_by_hour: Mapping[int, int], covered_from_hour: int, refilled_msat: int,
            now: float) -> BalanceMark:
    """The mark to keep after seeing the balance at `now`. net_by_hour: the channel's net
    forward flow (in - out, msat) per rollup hour from covered_from_hour on (hours without
    forwards absent)."""
    hour = int(now // HOUR_SECONDS)
    fresh = BalanceMark(now, local_msat, hour, net_by_hour.get(hour, 0), refilled_msat,
                        mark.outside_msat_per_hour if mark is not None else 0.0, capacity_msat)
    if mark is None:
        return fresh
    if capacity_msat != mark.capacity_msat:
        # a channel opened, closed or spliced: its balance is no inflow; start again
        return dataclasses.replace(fresh, outside_msat_per_hour=0.0)
    span_hours = (now - mark.at) / HOUR_SECONDS
    if span_hours < 0 or refilled_msat < mark.refilled_msat:
        return fresh            # clock or ledger went back: start again from here
    if span_hours < MIN_SPAN_HOURS:
        return mark
    if mark.hour < covered_from_hour:
        return fresh            # the rollups given no longer cover the span
    forwards = sum(v for h, v in net_by_hour.items() if h >= mark.hour) - mark.hour_net_msat
    outside = (local_msat - mark.local_msat) - forwards - (refilled_msat - mark.refilled_msat)
    keep = math.exp(-span_hours * math.log(2) / HALF_LIFE_HOURS)
    smoothed = keep * mark.outside_msat_per_hour + (1 - keep) * outside / span_hours
    return dataclasses.replace(fresh, outside_msat_per_hour=smoothed)


def net_forward_by_hour(rows: Iterable[Sequence[int]]) -> Dict[int, int]:
    """hour -> in - out msat, of hourly rollup rows (modules.evidence.HourRow)."""
    return {r[0]: r[6] - r[2] for r in rows}


def add_up(parts: Iterable[Mapping[int, int]]) -> Dict[int, int]:
    """Several channels' net flows by hour as one (channels to one peer)."""
    total: Dict[int, int] = {}
    for part in parts:
        for h, v in part.items():
            total[h] = total.get(h, 0) + v
    return total
