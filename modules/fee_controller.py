"""The fee decision: pure functions of the channels' evidence, their controller state, the
config and `now`. No RPC, no SQL, no clock.

    decisions = decide_all_fees(inputs, states, config, now)

Each channel (each peer: see below) goes through one visible list of stages, each returning
its fee and its reason:

    demand     -> the posterior of its demand curve from all its evidence, informed by the
                  node's other channels and by what the network charges into the peer
                  (modules.demand, modules.network_prior)
    liquidity  -> the fee that earns the most over the horizon given what the channel can
                  supply: demand price, or liquidity price when outbound sells faster than
                  it can be refilled (modules.liquidity)
    explore    -> while demand is uncertain, alternate the best guess with probes around it;
                  a channel without demand tries cheaper, never higher (modules.exploration);
                  a new channel with no history starts at the network's median fee
    congestion -> HTLC slots nearly full: priced at the ceiling
    bounds     -> [min-fee-ppm, max-fee-ppm] (narrowed by a peer policy's own), never below
                  what refills cost (nor above a peer policy's ceiling)
    gossip     -> broadcast only a change worth it, within the gossip budget
                  (modules.gossip_gate)
    htlc_max   -> per channel, after the fee: the max-HTLC its spendable balance supports, in
                  coarse bands (modules.htlc_max); sent with a fee broadcast, or alone when
                  senders would fail (or pass it over) and the same gossip budget allows

Actions: "set" (broadcast new_fee_ppm), "hold" (the fee is where the stages put it),
"skip_gossip" (a change is wanted, `target_fee_ppm`, but it is too small or too soon, or
the gossip budget is spent), "skip_inactive" (not CHANNELD_NORMAL or peer offline),
"skip_policy" (the peer's policy is passive: nothing is changed) and "set_htlc_max" (the fee
stays; the max-HTLC alone is broadcast). A "set" carries `new_htlc_max_msat` when the
max-HTLC changes too (one setchannel, one broadcast).

A peer policy (modules.policy) is data in the inputs: `static` replaces the stages by its
fee (set at once, through the gate's urgent path, then held), `passive` by "skip_policy",
and a dynamic policy's [min, max] narrows the options' bounds for every stage.

Evidence lives in the database, not in the state: a fee set by hand, a band change or an
exploration step never throws evidence away; every period stays evidence at its own fee.
The state holds only what the gate and the exploration need (typed: FeeState).

Several channels to one peer: lightningd forwards over any channel to the next peer
(non-strict forwarding) and senders choose by fee, so demand, balance and flow belong to
the peer. Such channels are decided once on their merged evidence and summed balances,
and all get that one fee.

What the caller does with a decision: persist `new_state` once the action is carried out
(after a successful setchannel for "set"; in dry-run the state of a "set" is not kept, so the
same move is proposed again), always for the other actions.
"""
import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from modules import demand as demand_model
from modules import balance_trend, exploration, gossip_gate, htlc_max, liquidity, network_prior, observed_prices
from modules.balance_trend import BalanceMark
from modules.demand import DemandCurve
from modules.evidence import Evidence, merge
from modules.gossip_gate import GossipBudget
from modules.models import Channel, ChannelFlow
from modules.network_prior import NetworkSummary
from modules.policy import DYNAMIC, PASSIVE, PeerPolicy, fee_bounds

A_SET, A_HOLD, A_SKIP_GOSSIP, A_SKIP_INACTIVE = "set", "hold", "skip_gossip", "skip_inactive"
A_SKIP_POLICY, A_SET_HTLC_MAX = "skip_policy", "set_htlc_max"
# Prices are set on the posterior mean curve (None), or on the curve of one quantile of the
# price scale.
PRICING_QUANTILE = None
# inflow from outside the forwards worth this share of what the channel sells at its fee:
# its balance is held from outside (scarcity may hold its fee, not raise it)
OUTSIDE_MATERIAL_SHARE = 0.1
# a channel's own arrivals behind its posterior before its credible range sizes a move
CREDIBLE_MIN_ARRIVALS = 10


@dataclasses.dataclass(frozen=True)
class FeeInputs:
    channel: Channel
    flow: Optional[ChannelFlow]
    evidence: Evidence
    rebalance_cost_ppm: Optional[int] = None   # average fee paid per msat refilled into it
    refills_available: bool = False            # sling there and budget left: refills can be bought
    policy: Optional[PeerPolicy] = None        # the peer's active policy (revenue-policy)
    # for the balance's trend (modules.balance_trend): net forward flow per rollup hour from
    # flows_from_hour on (None: not given, no trend read), refills bought into it all time
    net_forward_by_hour: Mapping[int, int] = dataclasses.field(default_factory=dict)
    flows_from_hour: Optional[int] = None
    refilled_msat: int = 0
    network: Optional[NetworkSummary] = None   # what other nodes charge into the peer (gossip)


@dataclasses.dataclass(frozen=True)
class FeeState:
    """Per-channel controller state, persisted between cycles (to_dict / from_dict: JSON)."""
    fee_ppm: int                                 # fee in force on the channel
    last_broadcast_at: Optional[float] = None    # last setchannel by the controller
    gossip_tokens: float = gossip_gate.BURST     # the gossip budget's bucket (full at start)...
    gossip_tokens_at: Optional[float] = None     # ... as of this time
    stock_band: Optional[int] = None             # balance band (modules.liquidity.STOCK_BANDS)
    phase: str = exploration.EXPLOIT             # the fee in force is the best guess or a probe
    probe_side: int = 0                          # the next probe's side: +1 above, -1 below, 0 not yet
    fee_since: Optional[float] = None            # when the fee in force took effect
    target_fee_ppm: Optional[int] = None         # where the stages put the fee last time
    balance_mark: Optional[BalanceMark] = None   # the balance's trend (modules.balance_trend)
    start_fee_ppm: Optional[int] = None          # the fee the controller started from (or adopted)

    @property
    def gossip_budget(self) -> GossipBudget:
        return GossipBudget(self.gossip_tokens, self.gossip_tokens_at)

    def to_dict(self) -> Dict[str, Any]:
        # a plain copy (dataclasses.asdict deep-copies, at a fee cycle's cost)
        d = dict(self.__dict__)
        if self.balance_mark is not None:
            d["balance_mark"] = dict(self.balance_mark.__dict__)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeeState":
        """Also reads the states of earlier versions: what they share is kept."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in names}
        mark = kept.get("balance_mark")
        if mark is not None:
            kept["balance_mark"] = BalanceMark.from_dict(mark) if isinstance(mark, Mapping) else None
        return cls(**kept)


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What one stage did: the fee after it and why."""
    stage: str
    fee_ppm: int
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        return {"stage": self.stage, "fee_ppm": self.fee_ppm, "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class FeeDecision:
    short_channel_id: str
    old_fee_ppm: int
    new_fee_ppm: int
    action: str
    reasons: List[str]
    stages: List[StageResult]
    new_state: FeeState
    fee_base_msat: int = 0
    target_fee_ppm: Optional[int] = None         # what the stages arrived at, even if not set
    demand_price_ppm: Optional[int] = None       # the fee demand alone would put
    liquidity_price_ppm: Optional[int] = None    # ... with what the channel can supply
    scarce: bool = False
    curve: Optional[DemandCurve] = None          # the demand posterior (for the rebalancer)
    inflow_msat_per_hour: float = 0.0
    htlc_max_msat: Optional[int] = None          # the max-HTLC advertised now
    htlc_max_target_msat: Optional[int] = None   # where its band puts it (None: not managed)
    new_htlc_max_msat: Optional[int] = None      # sent with this decision's setchannel

    def to_dict(self) -> Dict[str, Any]:
        return {"short_channel_id": self.short_channel_id, "old_fee_ppm": self.old_fee_ppm,
                "new_fee_ppm": self.new_fee_ppm, "fee_base_msat": self.fee_base_msat,
                "action": self.action, "reasons": list(self.reasons),
                "target_fee_ppm": self.target_fee_ppm, "demand_price_ppm": self.demand_price_ppm,
                "liquidity_price_ppm": self.liquidity_price_ppm, "scarce": self.scarce,
                "htlc_max_msat": self.htlc_max_msat, "htlc_max_target_msat": self.htlc_max_target_msat,
                "new_htlc_max_msat": self.new_htlc_max_msat,
                "stages": [s.to_dict() for s in self.stages], "state": self.new_state.to_dict()}


@dataclasses.dataclass(frozen=True)
class PeerView:
    """What one decision is made on: a channel, or all channels to one peer summed."""
    key: str                      # the lead channel's scid
    channel: Channel              # summed balances, the lead's fee and name
    evidence: Evidence
    refill_cost_ppm: Optional[int]
    policy: Optional[PeerPolicy] = None
    net_forward_by_hour: Mapping[int, int] = dataclasses.field(default_factory=dict)
    flows_from_hour: Optional[int] = None
    refilled_msat: int = 0
    network: Optional[NetworkSummary] = None


def is_congested(channel: Channel, config) -> bool:
    return channel.max_htlcs > 0 and channel.htlcs_in_use / channel.max_htlcs >= config.htlc_congestion_threshold


def horizon_hours(config) -> float:
    """The liquidity horizon: the days of outbound volume a channel's liquidity target holds."""
    return config.rebalance_target_days * 24


def quiet_rate_per_hour(views: Iterable[PeerView]) -> float:
    """Arrivals per hour of the node's quieter channels (the lower quartile of those with
    any): what a channel's silence is judged against. 0 when none has arrivals yet."""
    rates = sorted(v.evidence.arrivals / v.evidence.hours for v in views
                   if v.evidence.arrivals > 0 and v.evidence.hours > 0)
    return rates[(len(rates) - 1) // 4] if rates else 0.0


def node_sells_at_ppm(views: Iterable[PeerView]) -> Optional[int]:
    """The fee the node's channels with arrivals sell at (the lower quartile of their fees in
    force): evidence of demand that far down, for a silent channel's floor. None without any."""
    fees = sorted(v.channel.fee_ppm for v in views if v.evidence.arrivals > 0
                  and (v.policy is None or v.policy.strategy == DYNAMIC))   # a pinned fee says nothing
    return fees[(len(fees) - 1) // 4] if fees else None


def demand_seen_down_to_ppm(node_sells_at: Optional[int], network: Optional[NetworkSummary]) -> Optional[int]:
    """How low a silent channel's fee may go on the evidence of demand there: where the node's
    other channels sell, but not below half what the network charges into its peer (gossip
    says that peer's routes are priced higher); with no sales on the node, half the network's
    median alone (what others charge into that peer is demand evidence too)."""
    if network is None:
        return node_sells_at
    return max(node_sells_at or 0, network.median_fee_ppm // 2) or None


def credible_range(curve: DemandCurve, evidence: Evidence) -> Optional[Tuple[float, float]]:
    """The price scale's 80 % range, when the channel's own arrivals stand behind it (not
    the node's prior alone): how far a move may go by the evidence (modules.exploration)."""
    if evidence.arrivals < CREDIBLE_MIN_ARRIVALS:
        return None
    return curve.quantile_scale_ppm(0.1), curve.quantile_scale_ppm(0.9)


def decide_fee(view: PeerView, curve: DemandCurve, state: Optional[FeeState], config,
               now: float, quiet_rate: float = 0.0, sells_at_ppm: Optional[int] = None) -> FeeDecision:
    ch = view.channel
    # a dynamic peer policy's bounds replace the options' for every stage
    policy_lo, policy_hi, policy_note = fee_bounds(config.min_fee_ppm, config.max_fee_ppm, view.policy)
    if policy_note:
        config = dataclasses.replace(config, min_fee_ppm=policy_lo, max_fee_ppm=policy_hi)
    reasons: List[str] = []
    network = view.network if network_prior.usable(view.network) else None
    # first seen, nothing learnt of it yet: it starts from what the network charges the peer
    cold_start = (state is None and network is not None and not view.evidence.has_demand
                  and view.evidence.hours < exploration.NO_DEMAND_MIN_HOURS)
    if state is None:
        state = FeeState(ch.fee_ppm, fee_since=now, start_fee_ppm=ch.fee_ppm)
        reasons.append(f"new to the controller: its fee is {ch.fee_ppm} ppm")
    elif ch.fee_ppm != state.fee_ppm:
        reasons.append(f"fee changed outside the controller ({state.fee_ppm} -> {ch.fee_ppm} ppm): "
                       f"adopted; its evidence is kept")
        state = dataclasses.replace(state, fee_ppm=ch.fee_ppm, fee_since=now, phase=exploration.EXPLOIT,
                                    start_fee_ppm=ch.fee_ppm)
    elif state.start_fee_ppm is None:      # a state kept by an earlier version
        state = dataclasses.replace(state, start_fee_ppm=ch.fee_ppm)

    inflow = view.evidence.inflow_msat_per_hour

    def decision(action: str, new_fee: int, new_state: FeeState, stages: List[StageResult],
                 target: Optional[int] = None, price: Optional[liquidity.LiquidityPrice] = None) -> FeeDecision:
        return FeeDecision(ch.short_channel_id, ch.fee_ppm, new_fee, action,
                           reasons + [s.reason for s in stages], stages, new_state, config.fee_base_msat,
                           target, price.demand_price_ppm if price else None,
                           price.fee_ppm if price else None, bool(price and price.scarce), curve, inflow)

    if not ch.is_active or not ch.peer_connected:
        why = "peer offline" if ch.is_active else f"channel {ch.state}"
        return decision(A_SKIP_INACTIVE, ch.fee_ppm, state,
                        [StageResult("demand", ch.fee_ppm, f"{why}: not judged")])

    # what the balance does beyond the forwards: inflow from outside them is supply too
    outside = 0.0
    if view.flows_from_hour is not None:
        mark = balance_trend.observe(state.balance_mark, ch.local_msat, ch.capacity_msat,
                                     view.net_forward_by_hour, view.flows_from_hour, view.refilled_msat, now)
        state = dataclasses.replace(state, balance_mark=mark)
        outside = mark.supply_msat_per_hour
        inflow += outside

    # 1. demand: the posterior of its demand curve
    sd = curve.log_scale_sd()
    stages = [StageResult("demand", ch.fee_ppm, curve.describe()
                          + (f"; {network.describe()}" if network is not None else ""))]

    # 2. liquidity: what the channel can supply, its balance read in bands
    band = liquidity.stock_band(ch.local_ratio, state.stock_band)
    refill = view.refill_cost_ppm
    supply = liquidity.Supply(min(liquidity.banded_stock_msat(band, ch.capacity_msat), ch.capacity_msat),
                              inflow, horizon_hours(config), refill)
    priced = curve if PRICING_QUANTILE is None else curve.at_scale(curve.quantile_scale_ppm(PRICING_QUANTILE))
    on_grid = liquidity.DemandOnGrid.of(priced, liquidity.fee_grid(config.min_fee_ppm, config.max_fee_ppm,
                                                                   around_ppm=ch.fee_ppm))
    price = liquidity.price_liquidity(on_grid, supply, config.fee_base_msat, view.evidence.has_demand)
    if outside >= OUTSIDE_MATERIAL_SHARE * on_grid.rate_at(ch.fee_ppm) * on_grid.amount_msat > 0:
        price = liquidity.held_at_fee_in_force(price, ch.fee_ppm, on_grid, supply, config.fee_base_msat)
    # the model assumes a curve shape; the fees the channel was seen at assume none
    modelled_fee = price.fee_ppm
    price = observed_prices.checked_against_observations(
        price, view.evidence.observations, on_grid.amount_msat, supply, config.fee_base_msat,
        config.min_fee_ppm, config.max_fee_ppm,
        lambda fee: liquidity.revenue_of_curve(priced, fee, supply, config.fee_base_msat))
    stages.append(StageResult("liquidity", price.fee_ppm, price.reason if outside <= 0 else
                              f"{price.reason}; the balance holds beyond its forwards: "
                              f"{outside * 24 / 1e6:,.0f} k sat/day of inflow from outside them counted"))

    # 3. explore while uncertain; no demand: cheaper, never higher
    side = state.probe_side
    if side == 0:   # the first probe: to the side the posterior expects more of
        factor = exploration.probe_factor(sd)
        up, down = (liquidity.revenue_of_curve(priced, f, supply, config.fee_base_msat)
                    for f in (price.fee_ppm * factor, price.fee_ppm / factor))
        side = 1 if up >= down else -1
    staying = on_grid.revenue_at(ch.fee_ppm, supply, config.fee_base_msat)
    gain = price.expected_revenue_msat / staying - 1 if staying > 0 else 1.0
    if cold_start:
        plan = exploration.Plan(network.median_fee_ppm, exploration.EXPLOIT,
                                f"new, no history: starts at the network's median {network.median_fee_ppm} ppm")
    else:
        plan = exploration.next_fee(price.fee_ppm, ch.fee_ppm, state.phase, side,
                                    state.fee_since, sd, view.evidence.has_demand, view.evidence.hours,
                                    config.min_fee_ppm, config.max_fee_ppm, now, gain,
                                    on_grid.rate_at(price.fee_ppm), quiet_rate * view.evidence.hours,
                                    state.start_fee_ppm,
                                    credible_range(curve, view.evidence) if price.fee_ppm == modelled_fee
                                    else (price.fee_ppm, price.fee_ppm),     # an observed fee: seen, go there
                                    demand_seen_down_to_ppm(sells_at_ppm, network))
    stages.append(StageResult("explore", plan.fee_ppm, plan.reason))
    fee = plan.fee_ppm

    # 4. congestion
    urgent = False
    if is_congested(ch, config):
        fee, urgent = config.max_fee_ppm, True
        stages.append(StageResult("congestion", fee, f"{ch.htlcs_in_use}/{ch.max_htlcs} HTLC slots in "
                                  f"use: priced at the ceiling {fee} ppm"))
    else:
        stages.append(StageResult("congestion", fee, "HTLC slots free"))

    # 5. bounds, and never below what refills cost while its price counts on refills: then a
    # cheaper fee (a probe) would sell bought liquidity at a loss. With liquidity to spare, or
    # priced below what refills cost (they do not pay there: its stock sells alone, and so
    # under a peer policy's ceiling below that cost), what was bought is sunk: a floor above
    # its demand would only keep the balance from selling
    lo, hi = config.min_fee_ppm, config.max_fee_ppm
    floor, why, sunk = lo, f"min {lo} ppm", ""
    if refill is not None and refill > lo:
        if price.scarce and price.fee_ppm >= refill:
            floor, why = refill, f"refill cost {refill} ppm"
        else:
            sunk = f"; refill cost {refill} ppm no floor: its price does not count on refills"
    bounded = min(max(fee, floor), hi)
    bounds_why = (f"raised to {bounded} ppm ({why})" if bounded > fee
                  else f"capped at {bounded} ppm (max {hi} ppm)" if bounded < fee
                  else f"within [{floor}, {hi}] ppm") + sunk
    stages.append(StageResult("bounds", bounded, f"{bounds_why}; {policy_note}" if policy_note else bounds_why))
    fee = bounded
    urgent = urgent or not lo <= ch.fee_ppm <= hi

    # 6. gossip gate
    verdict, why = gossip_gate.gate(ch.fee_ppm, fee, state.last_broadcast_at, state.gossip_budget,
                                    urgent, config, now)
    stages.append(StageResult("gossip", fee if verdict == gossip_gate.SET else ch.fee_ppm, why))
    kept = dataclasses.replace(state, stock_band=band, target_fee_ppm=fee,
                               fee_since=state.fee_since if state.fee_since is not None else now)
    if verdict == gossip_gate.SET:
        budget = state.gossip_budget.spend(now)
        flip = -side if plan.phase == exploration.PROBE else state.probe_side
        new_state = dataclasses.replace(kept, fee_ppm=fee, last_broadcast_at=now, fee_since=now,
                                        phase=plan.phase if fee == plan.fee_ppm else exploration.EXPLOIT,
                                        probe_side=flip, gossip_tokens=budget.tokens,
                                        gossip_tokens_at=budget.updated_at,
                                        # silence's floor is half the fee it starts from
                                        start_fee_ppm=fee if cold_start else kept.start_fee_ppm)
        return decision(A_SET, fee, new_state, stages, fee, price)
    action = A_HOLD if verdict == gossip_gate.SAME else A_SKIP_GOSSIP
    return decision(action, ch.fee_ppm, kept, stages, fee, price)


# --- several channels to one peer ------------------------------------------------------------
def scid_key(scid: str) -> Tuple:
    try:
        return tuple(int(p) for p in scid.split("x")) + ("",)
    except ValueError:
        return (float("inf"), float("inf"), float("inf"), scid)


def group_by_peer(inputs: Iterable[FeeInputs]) -> Dict[str, List[FeeInputs]]:
    groups: Dict[str, List[FeeInputs]] = {}
    for i in inputs:
        groups.setdefault(i.channel.peer_id, []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: scid_key(i.channel.short_channel_id))
    return groups


def _refill_cost(inputs: FeeInputs) -> Optional[int]:
    return inputs.rebalance_cost_ppm if inputs.refills_available else None


def peer_view(members: Sequence[FeeInputs], states: Mapping[str, FeeState]) -> PeerView:
    """One view of all channels to a peer, named and priced like its lead channel (the
    lowest scid that has a state)."""
    if len(members) == 1:
        m = members[0]
        return PeerView(m.channel.short_channel_id, m.channel, m.evidence, _refill_cost(m), m.policy,
                        m.net_forward_by_hour, m.flows_from_hour, m.refilled_msat, m.network)
    stated = [m for m in members if m.channel.short_channel_id in states]
    lead = (stated or list(members))[0]
    chans = [m.channel for m in members]
    active = [c for c in chans if c.is_active]
    channel = dataclasses.replace(
        lead.channel,
        state="CHANNELD_NORMAL" if active else lead.channel.state,
        capacity_msat=sum(c.capacity_msat for c in chans),
        local_msat=sum(c.local_msat for c in chans),
        spendable_msat=sum(c.spendable_msat for c in chans),
        receivable_msat=sum(c.receivable_msat for c in chans),
        htlcs_in_use=sum(c.htlcs_in_use for c in chans),
        max_htlcs=sum(c.max_htlcs for c in chans),
        peer_connected=any(c.peer_connected for c in chans))
    costs = [c for c in map(_refill_cost, members) if c is not None]
    covered = [m.flows_from_hour for m in members]
    return PeerView(lead.channel.short_channel_id, channel, merge([m.evidence for m in members]),
                    max(costs) if costs else None, lead.policy,
                    balance_trend.add_up(m.net_forward_by_hour for m in members),
                    None if None in covered else max(covered), sum(m.refilled_msat for m in members),
                    lead.network)


def _per_channel(peer: FeeDecision, members: Sequence[FeeInputs], states: Mapping[str, FeeState],
                 config, now: float) -> List[FeeDecision]:
    """The peer's decision for each of its channels: all get the peer's fee."""
    note = f"one fee for the {len(members)} channels to this peer (decided on their sum)"
    out = []
    for m in members:
        ch = m.channel
        own = states.get(ch.short_channel_id)
        last = own.last_broadcast_at if own is not None else None
        action, reasons = peer.action, [note] + list(peer.reasons)
        if not ch.is_active or not ch.peer_connected:
            action = A_SKIP_INACTIVE
            reasons.append("this channel is not active: left as it is")
        elif peer.new_fee_ppm == ch.fee_ppm:
            if action == A_SET:
                action, reasons = A_HOLD, reasons + [f"already at {ch.fee_ppm} ppm"]
        elif action != A_SET:      # out of line with its peer: align when its interval allows
            aligned = last is None or now - last >= config.fee_broadcast_min_interval_seconds
            action = A_SET if aligned else A_SKIP_GOSSIP
            reasons.append(f"aligning with the peer's fee {peer.new_fee_ppm} ppm"
                           + ("" if aligned else ": waits for its broadcast interval"))
        fee = peer.new_fee_ppm if action == A_SET else ch.fee_ppm
        new_state = dataclasses.replace(peer.new_state, fee_ppm=fee,
                                        last_broadcast_at=now if action == A_SET else
                                        (last if last is not None else peer.new_state.last_broadcast_at))
        out.append(dataclasses.replace(peer, short_channel_id=ch.short_channel_id, old_fee_ppm=ch.fee_ppm,
                                       new_fee_ppm=fee, action=action, reasons=reasons, new_state=new_state))
    return out


def decide_all_fees(inputs: Iterable[FeeInputs], states: Mapping[str, FeeState], config,
                    now: float) -> List[FeeDecision]:
    """Every managed channel's decision; channels to one peer decided together, every peer's
    demand informed by the others'."""
    groups = list(group_by_peer(inputs).values())
    views = [peer_view(members, states) for members in groups]
    network = {v.key: v.network.median_fee_ppm for v in views if network_prior.usable(v.network)}
    curves = demand_model.estimate_all({v.key: v.evidence for v in views},
                                       {v.key: v.channel.fee_ppm for v in views}, network)
    quiet, sells_at = quiet_rate_per_hour(views), node_sells_at_ppm(views)
    out: List[FeeDecision] = []
    for members, view in zip(groups, views):
        if view.policy is not None and view.policy.strategy != DYNAMIC:
            decided = decide_by_policy(members, view.policy, states, config, now)
        else:
            peer = decide_fee(view, curves[view.key], states.get(view.key), config, now, quiet, sells_at)
            decided = [peer] if len(members) == 1 else _per_channel(peer, members, states, config, now)
        out.extend(with_htlc_max(d, m.channel, config, now) for d, m in zip(decided, members))
    return out


def with_htlc_max(d: FeeDecision, channel: Channel, config, now: float) -> FeeDecision:
    """The htlc_max stage, per channel (its own balance), after the fee's: the decision with
    the channel's max-HTLC target, sent with a fee "set", or alone ("set_htlc_max") when it
    matters (modules.htlc_max: urgent) and the gossip interval and budget allow; a broadcast
    alone spends a token like a fee broadcast."""
    current = channel.htlc_maximum_msat

    def staged(reason: str, **changes) -> FeeDecision:
        stage = StageResult("htlc_max", changes.get("new_fee_ppm", d.new_fee_ppm), reason)
        return dataclasses.replace(d, stages=d.stages + [stage], reasons=d.reasons + [f"max-HTLC: {reason}"],
                                   htlc_max_msat=current, **changes)

    if not config.manage_htlc_max:
        return staged("not managed (revenue-ops-manage-htlc-max is off)")
    if d.action == A_SKIP_POLICY:
        return staged("peer policy passive: left as it is")
    if d.action == A_SKIP_INACTIVE:
        return staged("channel not active: left as it is")
    plan = htlc_max.plan_for_channel(channel)
    if plan is None:
        return staged("the node does not say what it advertises: left as it is")
    if not plan.changes:
        return staged(plan.reason, htlc_max_target_msat=plan.target_msat)
    if d.action == A_SET:
        return staged(f"{plan.reason}; sent with the fee", htlc_max_target_msat=plan.target_msat,
                      new_htlc_max_msat=plan.target_msat)
    if not plan.urgent:
        return staged(f"{plan.reason}; waits for the next fee broadcast", htlc_max_target_msat=plan.target_msat)
    state = d.new_state
    allowed, why = gossip_gate.broadcast_allowed(state.last_broadcast_at, state.gossip_budget, config, now)
    if not allowed:
        return staged(f"{plan.reason}; {why}", htlc_max_target_msat=plan.target_msat)
    budget = state.gossip_budget.spend(now)
    new_state = dataclasses.replace(state, last_broadcast_at=now, gossip_tokens=budget.tokens,
                                    gossip_tokens_at=budget.updated_at)
    return staged(f"{plan.reason}; broadcast alone, {why}", htlc_max_target_msat=plan.target_msat,
                  new_htlc_max_msat=plan.target_msat, action=A_SET_HTLC_MAX, new_state=new_state)


def decide_by_policy(members: Sequence[FeeInputs], policy: PeerPolicy, states: Mapping[str, FeeState],
                     config, now: float) -> List[FeeDecision]:
    """A static or passive peer: its policy says the fee, no stage runs. Static: each channel
    not at the policy's fee is set at once (the gate's urgent path), then held. Passive:
    nothing changes. No demand curve goes with these decisions: the rebalancer values a static
    channel's refills at its fee, and never rebalances a passive one."""
    out = []
    for m in members:
        ch = m.channel
        state = states.get(ch.short_channel_id) or FeeState(ch.fee_ppm, fee_since=now)
        target = ch.fee_ppm if policy.strategy == PASSIVE else policy.fee_ppm
        new_fee, new_state = ch.fee_ppm, dataclasses.replace(state, target_fee_ppm=target)
        if policy.strategy == PASSIVE:
            action, why = A_SKIP_POLICY, f"fee stays {ch.fee_ppm} ppm"
        elif not ch.is_active or not ch.peer_connected:
            action = A_SKIP_INACTIVE
            why = f"{'peer offline' if ch.is_active else 'channel ' + ch.state}: left as it is"
        else:
            verdict, why = gossip_gate.gate(ch.fee_ppm, target, state.last_broadcast_at, state.gossip_budget,
                                            True, config, now)
            action = A_SET if verdict == gossip_gate.SET else A_HOLD
            if action == A_HOLD:
                new_state = dataclasses.replace(new_state, fee_ppm=ch.fee_ppm)
            else:
                budget = state.gossip_budget.spend(now)
                new_fee = target
                new_state = dataclasses.replace(new_state, fee_ppm=target, last_broadcast_at=now, fee_since=now,
                                                phase=exploration.EXPLOIT, gossip_tokens=budget.tokens,
                                                gossip_tokens_at=budget.updated_at)
        stages = [StageResult("policy", target, policy.fee_text()), StageResult("gossip", new_fee, why)]
        out.append(FeeDecision(ch.short_channel_id, ch.fee_ppm, new_fee, action, [s.reason for s in stages],
                               stages, new_state, config.fee_base_msat, target))
    return out


def prune_state(states: Mapping[str, Any], active_scids: Iterable[str]) -> Tuple[Dict[str, Any], int]:
    """Spec feature 19: drop the state of channels no longer in listpeerchannels."""
    active = set(active_scids)
    kept = {scid: s for scid, s in states.items() if scid in active}
    return kept, len(states) - len(kept)
