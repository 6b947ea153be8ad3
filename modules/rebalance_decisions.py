"""What to rebalance and whether it pays: liquidity targets (spec feature 16), the futility
circuit breaker (17), source/destination choice, expected value, failure-count pruning (19).

Pure functions of data: no RPC, no SQL, no clock (`now` is a parameter). Money is integer
msat, fees integer ppm; rounding always leans against starting a job (revenue rounds down,
costs and lost earnings round up).

How a destination's job is valued (all over `rebalance-horizon-days`, H):
  amount        = min(deficit to target, max amount, what the sources can give), whole chunks
  revenue       = what the moved liquidity will sell for: the destination's best revenue over
                  H with `amount` more local balance, less without it, from its demand curve
                  (modules.demand, learnt by the fee controller) at the price that liquidity
                  will sell at (modules.liquidity.refill_value_msat), not at today's fee (a
                  drained channel's fee may be the price that drained it). A channel the fee
                  controller has not judged yet: min(amount, daily_out * H) * its fee
  lost earnings = the most the sources could have earned on the part of the moved amount
                  they would have sold themselves (min(x_s, source daily_out * H) at the
                  source's fee), whichever way sling splits the amount among the candidates
  max ppm       = the largest ppm with amount * ppm / 1e6 + lost + min profit <= revenue,
                  never above the fee the liquidity sells at (nor max-fee-ppm)
  worst cost    = amount * max ppm / 1e6;  expected profit = revenue - worst cost - lost
So a job that starts is profitable by construction at its worst case. Its budget
reservation (`reserve_msat`) adds one chunk: sling-once never moves more than the amount,
but a payment sling stopped waiting for may still settle (modules/job_manager.py).

Sling pulls from the candidates down to one floor per job (`depleteuptoamount`), so each
job has one `source_floor_msat` (the highest target among its candidates): no candidate
is drawn below its own target. Sling checks a candidate's balance before each payment,
so the job manager should pass depleteuptoamount = ceil((source_floor_msat + chunk) / 1000).
"""
import dataclasses
import math
from fractions import Fraction
from typing import (Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple)

from modules import liquidity
from modules.demand import DemandCurve
from modules.models import BALANCED, IDLE, SINK, SOURCE, Channel, ChannelFlow

PPM = 1_000_000
MIN_MAX_PPM = 1                 # a job sling can only route at 0 ppm is no job
MAX_SOURCE_CANDIDATES = 10      # candidates handed to one sling job
# The job manager reserves the fee of one chunk beyond the amount (a payment sling timed
# out on may still settle: JobPlan.reserve_msat is this decision's reserve_msat).
RESERVE_OVERSHOOT_CHUNKS = 1
SELLING_STATES = (SOURCE, BALANCED)
CHEAP_SOURCE_STATES = (SINK, BALANCED, IDLE)
FUTILITY_REASON = "Futility Circuit Breaker active."
DESTINATION, SOURCE_ROLE, NO_ROLE = "destination", "source", "none"

Failures = Mapping[str, Tuple[int, Optional[float]]]


def _mul_floor(value: int, factor: float) -> int:
    """floor(value * factor), exact for any float factor."""
    return math.floor(value * Fraction(factor))


def _ppm_floor(amount_msat: int, ppm: int) -> int:
    return amount_msat * ppm // PPM


def _ppm_ceil(amount_msat: int, ppm: int) -> int:
    return -(-amount_msat * ppm // PPM)


def sat_text(msat: int) -> str:
    """msat as sats for reasons: whole when exact, else up to 3 decimals."""
    text = f"{msat / 1000:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# --- feature 16: targets -------------------------------------------------------------
def liquidity_target_msat(capacity_msat: int, daily_volume_msat: int, config) -> int:
    """max(floor, min(capacity * ratio, daily_volume * days)): the local balance to keep."""
    floor_msat = config.rebalance_floor_sats * 1000
    capacity_target = _mul_floor(max(0, capacity_msat), config.rebalance_target_ratio)
    volume_target = _mul_floor(max(0, daily_volume_msat), config.rebalance_target_days)
    return max(floor_msat, min(capacity_target, volume_target))


# --- feature 17: futility circuit breaker -------------------------------------------
def futility_blocked(failure_count: int, last_failure_time: Optional[float], config,
                     now: float) -> bool:
    """More than futility_max_failures failures and the last one within the cooldown."""
    if failure_count <= config.futility_max_failures or last_failure_time is None:
        return False
    return now - last_failure_time < config.futility_cooldown_hours * 3600


# --- feature 19: pruning ------------------------------------------------------------
def prune_failures(source_failure_counts: Mapping, active_scids: Iterable[str]) -> Tuple[dict, List[str]]:
    """(the counts of channels still open, the sorted scids dropped); the input is not changed."""
    active = set(active_scids)
    kept = {k: v for k, v in source_failure_counts.items() if k in active}
    removed = sorted(k for k in source_failure_counts if k not in active)
    return kept, removed


# --- expected value -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DemandOutlook:
    """What the fee controller learnt of a channel's demand: enough to value a refill."""
    curve: DemandCurve                 # its demand posterior
    inflow_msat_per_hour: float        # volume that enters through it (refills it for free)
    has_demand: bool                   # anything asked to leave through it in the lookback

    def refill_value(self, local_msat: int, amount_msat: int, config) -> Tuple[int, int, int]:
        """(revenue msat the refill adds over the horizon, fee ppm it sells at, msat it sells)."""
        if not self.has_demand or amount_msat <= 0:
            return 0, 0, 0
        on_grid = liquidity.DemandOnGrid.of(self.curve, liquidity.fee_grid(config.min_fee_ppm, config.max_fee_ppm))
        supply = liquidity.Supply(max(0, local_msat), self.inflow_msat_per_hour,
                                  config.rebalance_horizon_days * 24)
        value, fee = liquidity.refill_value_msat(on_grid, supply, amount_msat, config.fee_base_msat)
        sold = min(amount_msat, int(value * PPM // fee)) if fee > 0 else 0
        return int(value), fee, sold


@dataclasses.dataclass(frozen=True)
class SourceCandidate:
    """A channel a job may pull from, and how much it can give to this job."""
    short_channel_id: str
    fee_ppm: int
    daily_out_msat: int
    giveable_msat: int           # above the job's source floor, less what other jobs may take


@dataclasses.dataclass(frozen=True)
class ExpectedValue:
    amount_msat: int
    sold_msat: int               # the part of the amount the destination sells within H
    expected_revenue_msat: int
    lost_earnings_msat: int
    max_ppm: int
    worst_cost_msat: int
    expected_profit_msat: int
    min_profit_msat: int
    worthwhile: bool             # the expected-value rule passes
    reasons: Tuple[str, ...]
    reserve_msat: int = 0        # the budget reservation: (amount + one chunk) at max ppm


def worst_lost_earnings_msat(amount_msat: int, sources: Sequence[SourceCandidate],
                             horizon_days: float) -> int:
    """The most the sources lose, over every split of `amount_msat` with x_s <= giveable_s:
    max sum(min(x_s, daily_out_s * H) * fee_s) / 1e6 (a fractional knapsack: dearest first)."""
    remaining, lost_ppm_msat = amount_msat, 0
    for s in sorted(sources, key=lambda s: (-s.fee_ppm, s.short_channel_id)):
        if remaining <= 0:
            break
        demand = _mul_floor(max(0, s.daily_out_msat), horizon_days)
        take = max(0, min(remaining, s.giveable_msat, demand))
        lost_ppm_msat += take * max(0, s.fee_ppm)
        remaining -= take
    return -(-lost_ppm_msat // PPM)


def expected_value(deficit_msat: int, dest_fee_ppm: int, dest_daily_out_msat: int,
                   sources: Sequence[SourceCandidate], config, *, force: bool = False,
                   outlook: Optional[DemandOutlook] = None, dest_local_msat: int = 0) -> ExpectedValue:
    """Values moving up to `deficit_msat` into a destination from `sources` (see module doc).

    With an `outlook` the moved liquidity is valued at what it will sell for; without one,
    at `dest_fee_ppm` for what `dest_daily_out_msat` buys. With `force`, a job the rule
    refuses still gets a max ppm: the fee the liquidity sells at.
    """
    chunk = config.rebalance_chunk_sats * 1000
    horizon = config.rebalance_horizon_days
    min_profit = config.rebalance_min_profit_sats * 1000
    giveable = sum(max(0, s.giveable_msat) for s in sources)
    wanted = min(max(0, deficit_msat), config.rebalance_max_amount_sats * 1000)
    amount = min(wanted, giveable) // chunk * chunk
    fee_in_force_ppm = dest_fee_ppm
    if outlook is not None:
        revenue, sells_at_ppm, sold = outlook.refill_value(dest_local_msat, amount, config)
        dest_fee_ppm = sells_at_ppm or dest_fee_ppm   # nothing sells: force falls back to its fee
    else:
        sold = min(amount, _mul_floor(max(0, dest_daily_out_msat), horizon))
        revenue = _ppm_floor(sold, max(0, dest_fee_ppm))
    fee_cap = max(0, min(dest_fee_ppm, config.max_fee_ppm))
    lost = worst_lost_earnings_msat(amount, sources, horizon)
    reasons: List[str] = []
    if amount == 0:
        if wanted <= 0:
            reasons.append("nothing to move")
        elif giveable <= 0:
            reasons.append("no source can give liquidity")
        else:
            reasons.append(f"amount {sat_text(min(wanted, giveable))} sat is below one chunk "
                           f"({sat_text(chunk)} sat)")
        return ExpectedValue(0, 0, 0, 0, 0, 0, 0, min_profit, False, tuple(reasons))
    valued = "its demand curve's price" if outlook is not None else "its fee"
    if dest_fee_ppm != fee_in_force_ppm:   # the operator sees how far the valuation reaches
        valued += f"; {dest_fee_ppm / max(fee_in_force_ppm, 1):.1f}x its fee in force, {fee_in_force_ppm} ppm"
    reasons.append(f"moves {sat_text(amount)} sat, sells {sat_text(sold)} sat in "
                   f"{horizon:g} days at {dest_fee_ppm} ppm ({valued}): revenue {sat_text(revenue)} sat, "
                   f"sources' lost earnings {sat_text(lost)} sat")
    room = revenue - lost - min_profit
    max_ppm = min(fee_cap, room * PPM // amount) if room > 0 else 0
    worthwhile = max_ppm >= MIN_MAX_PPM
    if room < 0:
        reasons.append(f"expected profit {sat_text(revenue - lost)} sat < min {sat_text(min_profit)} sat")
    elif fee_cap < MIN_MAX_PPM:
        reasons.append(f"destination fee {dest_fee_ppm} ppm leaves no room for rebalance fees")
    elif not worthwhile:
        reasons.append("no room for rebalance fees: max ppm would be 0")
    if not worthwhile and force and fee_cap >= MIN_MAX_PPM:
        max_ppm = fee_cap
        reasons.append(f"forced: expected-value rule skipped, max ppm {max_ppm} (the destination's fee)")
    worst = _ppm_ceil(amount, max_ppm)
    profit = revenue - worst - lost
    if worthwhile:
        reasons.append(f"expected profit {sat_text(profit)} sat >= min {sat_text(min_profit)} sat "
                       f"at max {max_ppm} ppm (worst-case fee {sat_text(worst)} sat)")
    reserve = _ppm_ceil(amount + RESERVE_OVERSHOOT_CHUNKS * chunk, max_ppm)
    return ExpectedValue(amount, sold, revenue, lost, max_ppm, worst, profit, min_profit,
                         worthwhile, tuple(reasons), reserve)


# --- the plan -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RebalanceDecision:
    """One channel's verdict in a pass: a destination (started or not), a source, or neither."""
    short_channel_id: str
    role: str                    # "destination", "source" or "none"
    start: bool                  # a sling job should start for this destination
    reasons: Tuple[str, ...]
    flow_state: str
    capacity_msat: int
    local_msat: int
    target_msat: int
    deficit_msat: int = 0        # what the destination wants (target - local, or as asked)
    surplus_msat: int = 0        # what a source holds above its target
    fee_ppm: int = 0
    daily_out_msat: int = 0
    amount_msat: int = 0
    max_ppm: int = 0
    expected_revenue_msat: int = 0
    worst_cost_msat: int = 0
    lost_earnings_msat: int = 0
    expected_profit_msat: int = 0
    min_profit_msat: int = 0
    reserve_msat: int = 0        # budget the job reserves: (amount + one chunk) at max ppm
    source_floor_msat: int = 0   # no candidate is drawn below this (sling depleteuptoamount)
    candidates: Tuple[str, ...] = ()
    forced: bool = False
    futility_blocked: bool = False

    @property
    def target_local_msat(self) -> int:
        """The destination's local balance once the job is done."""
        return self.local_msat + self.amount_msat

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["reasons"], d["candidates"] = list(self.reasons), list(self.candidates)
        return d


@dataclasses.dataclass(frozen=True)
class _View:
    ch: Channel
    state: str
    daily_out_msat: int
    fee_ppm: int
    target_msat: int
    outlook: Optional[DemandOutlook] = None

    @property
    def scid(self) -> str:
        return self.ch.short_channel_id

    @property
    def usable(self) -> bool:
        return self.ch.is_active and self.ch.peer_connected


def _view(ch: Channel, flow: Optional[ChannelFlow], fee_ppm_by_scid: Mapping[str, int],
          outlooks: Mapping[str, DemandOutlook], config) -> _View:
    volume = flow.daily_volume_msat if flow else 0
    return _View(ch, flow.state if flow else IDLE, max(0, flow.daily_out_msat) if flow else 0,
                 int(fee_ppm_by_scid.get(ch.short_channel_id, ch.fee_ppm)),
                 liquidity_target_msat(ch.capacity_msat, volume, config),
                 outlooks.get(ch.short_channel_id))


def _giveable(v: _View, floor_msat: int, committed: Mapping[str, int]) -> int:
    own = min(v.ch.local_msat - max(floor_msat, v.target_msat), v.ch.spendable_msat)
    return max(0, own - committed.get(v.scid, 0))


def _loss_rate(v: _View, horizon_days: float) -> float:
    """ppm lost per moved msat if this source gave all it has above its target."""
    surplus = max(1, v.ch.local_msat - v.target_msat)
    return v.fee_ppm * min(1.0, _mul_floor(v.daily_out_msat, horizon_days) / surplus)


def _source_pool(views: Iterable[_View], sources_exclude: Collection[str], config) -> List[_View]:
    """Every channel that may give (usable, above its target, not excluded), cheapest first:
    by the share of what it gives that it would have sold at its fee, then the most surplus."""
    pool = [v for v in views if v.usable and v.scid not in sources_exclude
            and _giveable(v, 0, {}) > 0]
    pool.sort(key=lambda v: (_loss_rate(v, config.rebalance_horizon_days),
                             -(v.ch.local_msat - v.target_msat), v.scid))
    return pool


def _choose_sources(dest: _View, pool: Sequence[_View], committed: Mapping[str, int],
                    wanted_msat: int) -> Tuple[Tuple[SourceCandidate, ...], int]:
    """(candidates, source floor): the cheapest sources first, until they cover `wanted_msat`.

    A source for this destination is in the pool, not to the destination's peer, still has
    something nobody else may take, and fills up or idles (SINK/BALANCED/IDLE) or is priced
    below the destination. All candidates share one floor (sling has one per job): the
    highest of their targets; a source that would give less in total under it is passed over.
    """
    chosen: List[_View] = []
    floor = total = 0
    for v in pool:
        if total >= wanted_msat or len(chosen) >= MAX_SOURCE_CANDIDATES:
            break
        if (v.scid == dest.scid or v.ch.peer_id == dest.ch.peer_id or _giveable(v, 0, committed) <= 0
                or not (v.state in CHEAP_SOURCE_STATES or v.fee_ppm < dest.fee_ppm)):
            continue
        new_floor = max(floor, v.target_msat)
        new_total = sum(_giveable(u, new_floor, committed) for u in chosen + [v])
        if new_total > total:
            chosen, floor, total = chosen + [v], new_floor, new_total
    candidates = tuple(SourceCandidate(u.scid, u.fee_ppm, u.daily_out_msat, _giveable(u, floor, committed))
                       for u in chosen)
    return tuple(c for c in candidates if c.giveable_msat > 0), floor


def _evaluate(d: _View, deficit: int, pool: Sequence[_View], committed: Mapping[str, int],
              config, force: bool) -> Tuple[ExpectedValue, Tuple[SourceCandidate, ...], int]:
    wanted = min(deficit, config.rebalance_max_amount_sats * 1000)
    sources, floor = _choose_sources(d, pool, committed, wanted)
    return expected_value(deficit, d.fee_ppm, d.daily_out_msat, sources, config, force=force,
                          outlook=d.outlook, dest_local_msat=d.ch.local_msat), sources, floor


def plan_rebalances(channels: Sequence[Channel], flows: Mapping[str, ChannelFlow],
                    fee_ppm_by_scid: Mapping[str, int], failures: Failures, config, now: float, *,
                    sources_exclude: Collection[str] = (), destinations_exclude: Collection[str] = (),
                    only_scids: Optional[Collection[str]] = None, amount_msat: Optional[int] = None,
                    force: bool = False, budget_available_msat: Optional[int] = None,
                    outlooks: Mapping[str, DemandOutlook] = {}, no_source: Mapping[str, str] = {},
                    no_destination: Mapping[str, str] = {}) -> List[RebalanceDecision]:
    """A verdict for every channel (or every one in `only_scids`), with numbers and reasons.

    `flows` and `fee_ppm_by_scid` are keyed by scid (a missing flow counts as IDLE, a missing
    fee as the channel's current fee); `failures` maps a destination's scid to
    (failure_count, last_failure_time). `sources_exclude`: channels not to pull from (in a
    job already, failing); `destinations_exclude`: channels not to fill (a job running).
    `amount_msat` (with `only_scids`) replaces the deficit to target. `force` skips the
    expected-value rule and the flow rule, never the breaker nor the budget.
    `budget_available_msat` (None: not checked) caps the summed reservations (`reserve_msat`)
    of the jobs started, cutting a job to whole chunks that fit when needed. `outlooks`: the
    fee controller's demand outlook of each channel, which values a refill (module doc).
    `no_source` / `no_destination`: channels the operator's peer policies keep out of that
    role, each with the reason its verdict gives (modules.policy).

    Destinations come first, started ones before refused, each by expected profit; then the
    rest by scid. Sources are shared among destinations: what one job may draw is no longer
    giveable to the next, so all jobs together never take a source below its target.
    """
    if amount_msat is not None and not only_scids:
        raise ValueError("amount_msat needs only_scids: it is the amount for one destination")
    views = [_view(c, flows.get(c.short_channel_id), fee_ppm_by_scid, outlooks, config) for c in channels]
    sources_exclude = set(sources_exclude) | set(no_source)
    wanted = set(only_scids) if only_scids is not None else None
    others: List[RebalanceDecision] = []
    dests: List[Tuple[_View, int, Tuple[str, ...]]] = []
    for v in views:
        if wanted is not None and v.scid not in wanted:
            continue
        gap = v.target_msat - v.ch.local_msat
        relation = "below target" if gap > 0 else "above target" if gap < 0 else "at target"
        reasons = [relation]
        deficit = gap
        if amount_msat is not None:
            deficit = amount_msat
            reasons.append(f"amount asked: {sat_text(amount_msat)} sat")
        if not v.usable:
            state = f"not active ({v.ch.state})" if not v.ch.is_active else "peer not connected"
            others.append(_plain(v, NO_ROLE, [state] + reasons, deficit_msat=max(0, deficit),
                                 surplus_msat=max(0, -gap)))
        elif deficit <= 0:
            others.append(_source_decision(v, reasons, sources_exclude, no_source.get(v.scid)))
        elif v.scid in no_destination:
            others.append(_plain(v, NO_ROLE, reasons + [no_destination[v.scid]], deficit_msat=deficit))
        elif v.scid in destinations_exclude:
            others.append(_plain(v, NO_ROLE, reasons + ["excluded as destination (job running)"],
                                 deficit_msat=deficit))
        else:
            if deficit > v.ch.receivable_msat:
                reasons.append(f"capped at receivable {sat_text(v.ch.receivable_msat)} sat")
                deficit = max(0, v.ch.receivable_msat)
            dests.append((v, deficit, tuple(reasons)))
    # Pass 1 ranks destinations on the whole pool; pass 2 hands out sources in that order.
    pool = _source_pool(views, sources_exclude, config)
    ranked = sorted(dests, key=lambda t: (-_evaluate(t[0], t[1], pool, {}, config, force)[0]
                                          .expected_profit_msat, t[0].scid))
    committed: Dict[str, int] = {}
    budget = budget_available_msat
    planned: List[RebalanceDecision] = []
    for v, deficit, pre in ranked:
        decision, sources = _destination_decision(v, deficit, pre, pool, committed, failures, config,
                                                  now, force, budget)
        if decision.start:
            # Sling may draw the whole amount from any one candidate: reserve that much of each.
            for s in sources:
                committed[s.short_channel_id] = (committed.get(s.short_channel_id, 0)
                                                 + min(s.giveable_msat, decision.amount_msat))
            if budget is not None:
                budget -= decision.reserve_msat
        planned.append(decision)
    planned.sort(key=lambda d: (not d.start, -d.expected_profit_msat, d.short_channel_id))
    return planned + sorted(others, key=lambda d: d.short_channel_id)


def _destination_decision(v: _View, deficit: int, pre: Tuple[str, ...], pool: Sequence[_View],
                          committed: Mapping[str, int], failures: Failures, config, now: float,
                          force: bool, budget: Optional[int]
                          ) -> Tuple[RebalanceDecision, Tuple[SourceCandidate, ...]]:
    reasons = list(pre)
    count, last = failures.get(v.scid, (0, None))
    blocked = futility_blocked(count, last, config, now)
    if blocked:
        reasons.append(FUTILITY_REASON)
    if v.outlook is not None:   # judged by what its demand curve says the refill sells for
        sells = v.outlook.has_demand
        if not sells:
            reasons.append("nothing asked to leave through it in the lookback: its liquidity does not sell"
                           + (" (forced)" if force else ""))
    else:
        sells = v.state in SELLING_STATES and v.daily_out_msat > 0
        if not sells:
            reasons.append(f"flow {v.state}, outbound {sat_text(v.daily_out_msat)} sat/day: "
                           f"its liquidity does not sell" + (" (forced)" if force else ""))
    ev, sources, floor = _evaluate(v, deficit, pool, committed, config, force)
    start = (not blocked and ev.amount_msat > 0 and ev.max_ppm >= MIN_MAX_PPM
             and (force or (sells and ev.worthwhile)))
    budget_note: List[str] = []
    if start and budget is not None and ev.reserve_msat > budget:
        chunk = config.rebalance_chunk_sats * 1000
        fitting = (budget * PPM // ev.max_ppm - RESERVE_OVERSHOOT_CHUNKS * chunk) // chunk * chunk
        cut = _evaluate(v, min(deficit, fitting), pool, committed, config, force) if fitting >= chunk else None
        if cut is not None and cut[0].amount_msat > 0 and cut[0].max_ppm >= MIN_MAX_PPM \
                and (force or cut[0].worthwhile) and cut[0].reserve_msat <= budget:
            ev, sources, floor = cut
            budget_note.append(f"amount cut to {sat_text(ev.amount_msat)} sat to fit the budget "
                               f"({sat_text(budget)} sat left)")
        else:
            start = False
            budget_note.append(f"budget: reservation {sat_text(ev.reserve_msat)} sat (worst-case fee "
                               f"with one spare chunk) > available {sat_text(budget)} sat")
    forced = start and not (sells and ev.worthwhile)
    return RebalanceDecision(
        v.scid, DESTINATION, start, tuple(reasons) + ev.reasons + tuple(budget_note), v.state,
        v.ch.capacity_msat, v.ch.local_msat, v.target_msat, deficit_msat=deficit, fee_ppm=v.fee_ppm,
        daily_out_msat=v.daily_out_msat, amount_msat=ev.amount_msat, max_ppm=ev.max_ppm,
        expected_revenue_msat=ev.expected_revenue_msat, worst_cost_msat=ev.worst_cost_msat,
        lost_earnings_msat=ev.lost_earnings_msat, expected_profit_msat=ev.expected_profit_msat,
        min_profit_msat=ev.min_profit_msat, reserve_msat=ev.reserve_msat if start else 0,
        source_floor_msat=floor if sources else 0,
        candidates=tuple(s.short_channel_id for s in sources), forced=forced,
        futility_blocked=blocked), sources


def _plain(v: _View, role: str, reasons: Sequence[str], **numbers) -> RebalanceDecision:
    return RebalanceDecision(v.scid, role, False, tuple(reasons), v.state, v.ch.capacity_msat,
                             v.ch.local_msat, v.target_msat, fee_ppm=v.fee_ppm,
                             daily_out_msat=v.daily_out_msat, **numbers)


def _source_decision(v: _View, reasons: List[str], sources_exclude: Collection[str],
                     policy_reason: Optional[str] = None) -> RebalanceDecision:
    surplus = v.ch.local_msat - v.target_msat
    if surplus <= 0:
        return _plain(v, NO_ROLE, reasons, surplus_msat=max(0, surplus))
    if v.scid in sources_exclude:
        return _plain(v, NO_ROLE, reasons + [policy_reason or "excluded as source"], surplus_msat=surplus)
    can_give = _giveable(v, 0, {})
    reasons.append(f"can give {sat_text(can_give)} sat")
    if v.state not in CHEAP_SOURCE_STATES:
        reasons.append(f"{v.state}: a source only for destinations priced above {v.fee_ppm} ppm")
    return _plain(v, SOURCE_ROLE, reasons, surplus_msat=surplus)
