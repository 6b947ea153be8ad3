"""Demand evidence: how many forwards asked to leave through a channel at each fee it had.

Pure: built from the hourly rollups (settled forwards out, forwards refused here for lack of
outbound balance, their amounts and fees, inbound volume) and the fee history, `now` passed
in. An arrival is a forward that wanted to leave: settled or refused for lack of balance,
so a drained channel still shows what its liquidity would have sold.

Which fee was in force when: the fee history the plugin records (every fee it sets or finds
on the channel); before that history begins, the fee the forwards themselves paid
((fee - base) / amount: each past forward is a price it sold at), carried over the hours
without forwards. Older evidence weighs less (half-life), so a shift of demand shows.
Nothing here is reset by a fee change: every period stays evidence at its own fee.
"""
import bisect
import dataclasses
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

HOUR_SECONDS = 3600
PPM = 1_000_000
# A fee derived from forwards that differs by less than this from the previous hour's is the
# same fee (msat rounding of small forwards moves the quotient a little).
SAME_FEE_TOLERANCE = 0.03
# Volume entering through a channel changes with the rest of the node's fees: it is read
# over a shorter memory than demand, so a channel's supply follows the node within a day.
FLOW_HALF_LIFE_HOURS = 24.0

# (hour, out_count, out_msat, fee_msat, unmet_count, unmet_msat, in_msat): Database.hourly_flow_since
HourRow = Tuple[int, int, int, int, int, int, int]


@dataclasses.dataclass(frozen=True)
class PriceObservation:
    """Arrivals seen while one fee was in force (decay-weighted)."""
    fee_ppm: int
    hours: float
    arrivals: float

    @property
    def rate_per_hour(self) -> float:
        return self.arrivals / self.hours if self.hours > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Evidence:
    observations: Tuple[PriceObservation, ...] = ()
    arrivals: int = 0                 # forwards that asked to leave in the lookback (unweighted)
    unmet: int = 0                    # of which refused for lack of balance
    amount_msat: int = 0              # their total amount (unweighted)
    inflow_msat_per_hour: float = 0.0    # decay-weighted volume entering through the channel
    outflow_msat_per_hour: float = 0.0   # decay-weighted volume that left (settled)
    hours: float = 0.0                # exposure in the lookback (unweighted)

    @property
    def mean_amount_msat(self) -> int:
        return self.amount_msat // self.arrivals if self.arrivals else 0

    @property
    def has_demand(self) -> bool:
        return self.arrivals > 0


def merge(evidences: Sequence[Evidence]) -> Evidence:
    """Channels to one peer are one market: their evidence adds up fee by fee."""
    if len(evidences) == 1:
        return evidences[0]
    by_fee: Dict[int, List[float]] = {}
    for e in evidences:
        for o in e.observations:
            acc = by_fee.setdefault(o.fee_ppm, [0.0, 0.0])
            acc[0] += o.hours
            acc[1] += o.arrivals
    # exposure is the market's, not each channel's: the longest channel's hours
    hours = max((e.hours for e in evidences), default=0.0)
    scale = hours / sum(e.hours for e in evidences) if any(e.hours for e in evidences) else 1.0
    return Evidence(
        observations=tuple(PriceObservation(f, h * scale, a) for f, (h, a) in sorted(by_fee.items())),
        arrivals=sum(e.arrivals for e in evidences), unmet=sum(e.unmet for e in evidences),
        amount_msat=sum(e.amount_msat for e in evidences),
        inflow_msat_per_hour=sum(e.inflow_msat_per_hour for e in evidences),
        outflow_msat_per_hour=sum(e.outflow_msat_per_hour for e in evidences), hours=hours)


def _decayed_span(a: float, b: float, now: float, half_life_s: float) -> float:
    """Hours of [a, b] weighted by 0.5 ** (age / half-life)."""
    if b <= a:
        return 0.0
    k = math.log(2) / half_life_s
    return (math.exp(-k * (now - b)) - math.exp(-k * (now - a))) / k / HOUR_SECONDS


def build_evidence(rows: Sequence[HourRow], fee_changes: Sequence[Tuple[float, int]],
                   current_fee_ppm: int, base_fee_msat: int, now: float,
                   lookback_hours: float, half_life_hours: float) -> Evidence:
    """One channel's evidence over the lookback window ending at `now`.

    rows: its hourly rollups, oldest first; fee_changes: (time, fee ppm) oldest first, the
    first possibly before the window (the fee in force when it began).
    """
    start = now - lookback_hours * HOUR_SECONDS
    half_life_s = half_life_hours * HOUR_SECONDS
    first_hour, last_hour = (start // HOUR_SECONDS), (now // HOUR_SECONDS)
    if rows and (rows[0][0] < first_hour or rows[-1][0] > last_hour):
        rows = [r for r in rows if first_hour <= r[0] <= last_hour]
    history_from = fee_changes[0][0] if fee_changes else math.inf
    known_from = min(history_from, rows[0][0] * HOUR_SECONDS) if rows else history_from
    begin = max(start, known_from)
    if begin >= now:
        return Evidence()

    # the fee of each hour before the recorded history: what its forwards paid
    derived: Dict[int, int] = {}
    last: Optional[int] = None
    history_hour = history_from / HOUR_SECONDS
    for hour, out_count, out_msat, fee_msat, *_ in rows:
        if hour >= history_hour:
            break
        if out_msat > 0:
            sold = max(0, round((fee_msat - base_fee_msat * out_count) * PPM / out_msat))
            if last is None or abs(sold - last) > SAME_FEE_TOLERANCE * (last if last > 1 else 1):
                last = sold
        if last is not None:
            derived[hour] = last
    first_fee = (next(iter(derived.values())) if derived
                 else fee_changes[0][1] if fee_changes else current_fee_ppm)

    # segments of constant fee: (from, to, fee)
    segments: List[Tuple[float, float, int]] = []
    t, fee = begin, first_fee
    for hour in sorted(derived):
        edge = max(begin, hour * HOUR_SECONDS)
        if derived[hour] != fee and edge < min(history_from, now):
            segments.append((t, edge, fee))
            t, fee = edge, derived[hour]
    for when, changed_to in fee_changes:
        edge = max(begin, when)
        if edge >= now:
            break
        if edge > t:
            segments.append((t, edge, fee))
            t = edge
        fee = changed_to
    segments.append((t, now, fee))
    edges = [s[0] for s in segments]

    exposure: Dict[int, float] = {}
    for a, b, f in segments:
        exposure[f] = exposure.get(f, 0.0) + _decayed_span(a, b, now, half_life_s)
    arrivals: Dict[int, float] = {}
    count = unmet = amount = 0
    inflow = outflow = 0.0
    flow_half_life_s = FLOW_HALF_LIFE_HOURS * HOUR_SECONDS
    # per hour: weight = exp(-k (now - mid)); the hot loop of a fee cycle, kept plain
    k_demand, k_flow = math.log(2) / half_life_s, math.log(2) / flow_half_life_s
    one_fee = segments[0][2] if len(segments) == 1 else None
    for hour, out_count, out_msat, _fee, unmet_count, unmet_msat, in_msat in rows:
        mid = (hour + 0.5) * HOUR_SECONDS
        mid = begin if mid < begin else now if mid > now else mid
        f = one_fee if one_fee is not None else segments[bisect.bisect_right(edges, mid) - 1][2]
        asked = out_count + unmet_count
        if asked:
            arrivals[f] = arrivals.get(f, 0.0) + math.exp(k_demand * (mid - now)) * asked
            count += asked
            unmet += unmet_count
            amount += out_msat + unmet_msat
        if in_msat or out_msat:
            w = math.exp(k_flow * (mid - now))
            inflow += w * in_msat
            outflow += w * out_msat
    flow_hours = _decayed_span(begin, now, now, flow_half_life_s)
    return Evidence(
        observations=tuple(PriceObservation(f, h, arrivals.get(f, 0.0))
                           for f, h in sorted(exposure.items()) if h > 0),
        arrivals=count, unmet=unmet, amount_msat=amount,
        inflow_msat_per_hour=inflow / flow_hours if flow_hours else 0.0,
        outflow_msat_per_hour=outflow / flow_hours if flow_hours else 0.0,
        hours=(now - begin) / HOUR_SECONDS)


def fee_changes_to_record(fees_now: Iterable[Tuple[str, int]],
                          history: Dict[str, List[Tuple[float, int]]]) -> List[Tuple[str, int]]:
    """(scid, fee) of the channels whose fee differs from the last one recorded."""
    return [(scid, fee) for scid, fee in fees_now
            if not history.get(scid) or history[scid][-1][1] != fee]
