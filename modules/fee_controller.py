"""The fee decision: a pure function of a channel's data, its controller state, the config
and `now`. No RPC, no SQL, no clock.

    decision = decide_fee(inputs, state, config, now)

The fee is a base times a product of small modifiers, composed in one visible list
(`decide_fee`), each stage returning its factor and its reason (modules.fee_stages):

    observe -> hill_climb (base fee) -> flow_bias -> scarcity -> congestion -> bounds -> hysteresis

Actions: "set" (broadcast new_fee_ppm), "hold" (judged, no change wanted, e.g. settled
or still unclear), "skip_observing" (the fee in place is younger than
fee-min-observation-hours; the reason says how long is left), "skip_hysteresis" (a change
was wanted, `target_fee_ppm`, but is too small or too soon after the last broadcast) and
"skip_inactive" (channel not in CHANNELD_NORMAL or peer offline). The only move that does
not wait for the observation time is bringing a fee outside [min-fee-ppm, max-fee-ppm]
back inside (an option was changed).

What the caller does with it:
* `earned_msat_since_change` and `forwards_since_change` count the forwards that left
  through the channel since `state.last_change_at` (0 when there is no state yet). Pass
  the count: the climb judges noise by it (without it, and without a flow to estimate it
  from, the convergence bench falls from ~96% to ~86% of the best revenue and broadcasts
  six times as often);
* persist `decision.new_state` once the action is carried out: after a successful
  setchannel for "set" (in dry-run, do not persist the state of a "set": the controller
  then proposes the same move again next cycle rather than believing a fee that was never
  set), and always for the other actions;
* a fee found on the channel that differs from the state's is taken as set outside the
  controller: it is adopted and observed from then on.

Several channels to one peer (`decide_peer_fees`, `decide_all_fees`): lightningd forwards
over any channel to the next peer (non-strict forwarding) and senders choose by fee, so
revenue, balance and flow belong to the peer, not to one of its channels. Such channels
are decided *once*, on their aggregated inputs (capacity, balances, HTLC slots, revenue
and forwards summed, flow volume-weighted, the highest refill cost), with the state of
the lead channel (the lowest scid that has a state), and all get that one fee. Every
channel's new_state is a copy of the peer's state, so closing the lead channel loses
nothing. A channel whose fee is out of line with its peer's (a new channel, a manual
change) is brought in line as soon as its own broadcast interval allows.
"""
import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from modules.fee_stages import (CLIMB, NORMAL, SET, SETTLED, SMALL, SOON, ClimbOutcome,
                                Observation, StageResult, bounds, congestion, estimate_forwards,
                                flow_bias, flow_bias_factor, hill_climb, hysteresis, observe,
                                pricing_regime, scarcity)
from modules.models import (BALANCED, IDLE, SINK, SOURCE, Channel, ChannelFlow)

A_SET, A_HOLD, A_SKIP_OBSERVING, A_SKIP_HYSTERESIS, A_SKIP_INACTIVE = (
    "set", "hold", "skip_observing", "skip_hysteresis", "skip_inactive")

# The modifiers after the hill climb, in order: (fee, inputs, config) -> StageResult.
PRICING_STAGES = (flow_bias, scarcity, congestion, bounds)


@dataclasses.dataclass(frozen=True)
class FeeInputs:
    channel: Channel
    flow: Optional[ChannelFlow]
    earned_msat_since_change: int       # fees earned as the outgoing channel since state.last_change_at
    has_routed_out_ever: bool
    rebalance_cost_ppm: Optional[int] = None   # average cost paid to refill this channel
    forwards_since_change: Optional[int] = None  # their count; estimated from flow if None


@dataclasses.dataclass(frozen=True)
class FeeState:
    """Per-channel controller state, persisted between cycles (to_dict / from_dict: JSON)."""
    fee_ppm: int                       # fee in force on the channel
    base_fee_ppm: int                  # the hill climb's fee, before the modifiers
    last_change_at: float              # fee took effect: the current observation starts here
    last_broadcast_at: Optional[float] = None   # last setchannel by the controller
    mode: str = CLIMB                  # "climb", "probe" (one neighbour of a settled fee), "settled"
    direction: int = 1                 # +1 up, -1 down: next climb step / next probe side
    step_percent: float = 15.0         # current hill-climb step
    reference: Optional[Observation] = None  # the period the current one is compared with
    regime: str = NORMAL               # pricing regime of the current period
    bias: float = 1.0                  # flow bias of the current period
    settled_at: Optional[float] = None
    confirmations: int = 0             # probes in a row that confirmed the settled fee
    bracketed: bool = False            # this climb has seen a worse trial on some side
    checkpoint: Optional[Observation] = None  # settled: earlier part of the period (shift watch)
    last_rate_msat_per_hour: Optional[float] = None  # last judged revenue rate (for display)

    @property
    def previous_fee_ppm(self) -> Optional[int]:
        return self.reference.fee_ppm if self.reference else None

    @property
    def previous_rate_msat_per_hour(self) -> Optional[float]:
        return self.reference.rate_msat_per_hour if self.reference else None

    @classmethod
    def initial(cls, fee_ppm: int, now: float, config, flow: Optional[ChannelFlow] = None,
                last_broadcast_at: Optional[float] = None) -> "FeeState":
        """A fee the controller did not set: observed as it is, the first probe leaning
        with the flow (down for a SINK, else up)."""
        bias = flow_bias_factor(flow)
        return cls(fee_ppm=fee_ppm, base_fee_ppm=max(round(fee_ppm / bias), 0),
                   last_change_at=now, last_broadcast_at=last_broadcast_at,
                   direction=-1 if flow is not None and flow.state == SINK else 1,
                   step_percent=config.fee_step_percent, bias=bias)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeeState":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["reference"] = Observation.from_dict(values.get("reference"))
        values["checkpoint"] = Observation.from_dict(values.get("checkpoint"))
        return cls(**values)


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
    rate_msat_per_hour: Optional[float] = None   # revenue rate of the period just judged
    target_fee_ppm: Optional[int] = None         # what the stages arrived at, even if not set

    @property
    def factors(self) -> Dict[str, float]:
        return {s.stage: s.factor for s in self.stages}

    def to_dict(self) -> Dict[str, Any]:
        return {"short_channel_id": self.short_channel_id, "old_fee_ppm": self.old_fee_ppm,
                "new_fee_ppm": self.new_fee_ppm, "fee_base_msat": self.fee_base_msat,
                "action": self.action, "reasons": list(self.reasons),
                "rate_msat_per_hour": self.rate_msat_per_hour,
                "target_fee_ppm": self.target_fee_ppm,
                "stages": [s.to_dict() for s in self.stages],
                "state": self.new_state.to_dict()}


def decide_fee(inputs: FeeInputs, state: Optional[FeeState], config, now: float) -> FeeDecision:
    ch = inputs.channel
    reasons: List[str] = []
    if state is None:
        state = FeeState.initial(ch.fee_ppm, now, config, inputs.flow)
        reasons.append(f"new to the controller: observing its fee of {ch.fee_ppm} ppm")
    elif ch.fee_ppm != state.fee_ppm:
        reasons.append(f"fee changed outside the controller ({state.fee_ppm} -> {ch.fee_ppm} ppm): "
                       f"adopted, observing from now")
        state = FeeState.initial(ch.fee_ppm, now, config, inputs.flow, state.last_broadcast_at)

    def decision(action: str, new_fee: int, new_state: FeeState, stages: List[StageResult],
                 rate: Optional[float] = None, target: Optional[int] = None) -> FeeDecision:
        return FeeDecision(ch.short_channel_id, ch.fee_ppm, new_fee, action,
                           reasons + [s.reason for s in stages], stages, new_state,
                           config.fee_base_msat, rate, target)

    if not ch.is_active or not ch.peer_connected:
        why = "peer offline" if ch.is_active else f"channel {ch.state}"
        return decision(A_SKIP_INACTIVE, ch.fee_ppm, state,
                        [StageResult("observe", ch.fee_ppm, 1.0, f"{why}: not judged")])

    # 1. observe
    hours = max(0.0, now - state.last_change_at) / 3600
    earned = max(0, inputs.earned_msat_since_change) if hours > 0 else 0
    forwards = inputs.forwards_since_change if hours > 0 else 0
    if forwards is None:
        forwards = estimate_forwards(earned, state.fee_ppm, ch.fee_base_msat, inputs.flow)
    cur = Observation(state.fee_ppm, state.base_fee_ppm, earned, forwards, hours, now, state.bias)
    ready, observed = observe(cur, state.fee_ppm, config)
    # a fee outside [min-fee-ppm, max-fee-ppm] (an option changed) is corrected at once
    outside = not config.min_fee_ppm <= state.fee_ppm <= config.max_fee_ppm
    if not ready and not outside:
        return decision(A_SKIP_OBSERVING, ch.fee_ppm, state, [observed])

    # 2. hill climb, paused while scarcity or congestion prices the channel
    regime = pricing_regime(inputs, config)
    if not ready:
        climb = ClimbOutcome(state.base_fee_ppm, False, "bounds",
                             f"{state.fee_ppm} ppm is outside [{config.min_fee_ppm}, "
                             f"{config.max_fee_ppm}] ppm: corrected before the climb goes on", {}, {})
    elif state.regime != NORMAL or regime != NORMAL:
        climb = ClimbOutcome(state.base_fee_ppm, False, "paused",
                             f"hill climb paused at {state.base_fee_ppm} ppm: "
                             f"{regime if regime != NORMAL else state.regime} pricing", {}, {})
    else:
        climb = hill_climb(state, cur, config, now)

    # 3.-6. modifiers and bounds, in order
    stages = [observed, climb.stage(state.base_fee_ppm)]
    fee = climb.base_fee_ppm
    for stage in PRICING_STAGES:
        result = stage(fee, inputs, config)
        stages.append(result)
        fee = result.fee_ppm

    # 7. gossip hysteresis
    gate, why = hysteresis(state.fee_ppm, fee, state.last_broadcast_at,
                           dataclasses.replace(config, fee_change_min_percent=0) if outside else config,
                           now)
    stages.append(StageResult("hysteresis", fee if gate == SET else state.fee_ppm, 1.0, why))
    rate = cur.rate_msat_per_hour
    if gate == SET:
        if climb.moved:
            fields = climb.on_set
        elif state.mode == SETTLED:   # modifiers moved a settled fee: stay settled
            fields = {"checkpoint": None}
        else:                         # modifiers moved the fee: comparisons start afresh
            fields = {"reference": None}
        new_state = dataclasses.replace(
            state, **fields, fee_ppm=fee, base_fee_ppm=climb.base_fee_ppm, last_change_at=now,
            last_broadcast_at=now, regime=regime, bias=flow_bias_factor(inputs.flow),
            last_rate_msat_per_hour=rate)
        return decision(A_SET, fee, new_state, stages, rate, fee)
    if gate == SOON:   # retried next cycle with the same judgement: nothing advances
        return decision(A_SKIP_HYSTERESIS, ch.fee_ppm, state, stages, rate, fee)
    # the fee stays: the climb keeps observing, or settles where a bound stopped it
    new_state = dataclasses.replace(state, **climb.on_hold, last_rate_msat_per_hour=rate)
    action = A_SKIP_HYSTERESIS if gate == SMALL else A_HOLD
    return decision(action, ch.fee_ppm, new_state, stages, rate, fee)


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


def _aggregate_flow(flows: Sequence[Optional[ChannelFlow]], scid: str, config) -> Optional[ChannelFlow]:
    known = [f for f in flows if f is not None]
    if not known:
        return None
    volume = sum(f.daily_volume_msat for f in known)
    ratio = sum(f.flow_ratio * f.daily_volume_msat for f in known) / volume if volume else 0.0
    if all(f.state == IDLE for f in known):
        state = IDLE
    elif ratio > config.flow_ratio_threshold:
        state = SOURCE
    elif ratio < -config.flow_ratio_threshold:
        state = SINK
    else:
        state = BALANCED
    return ChannelFlow(scid, sum(f.in_msat for f in known), sum(f.out_msat for f in known),
                       sum(f.fees_earned_msat for f in known), sum(f.in_count for f in known),
                       sum(f.out_count for f in known), ratio, volume,
                       sum(f.daily_out_msat for f in known), state,
                       max(f.updated_at for f in known))


def aggregate_peer_inputs(members: Sequence[FeeInputs], lead: FeeInputs, config) -> FeeInputs:
    """One FeeInputs for all channels to a peer, named and priced like `lead`."""
    chans = [m.channel for m in members]
    active = [c for c in chans if c.is_active]
    channel = dataclasses.replace(
        lead.channel,
        state="CHANNELD_NORMAL" if active else lead.channel.state,
        capacity_msat=sum(c.capacity_msat for c in chans),
        local_msat=sum(c.local_msat for c in chans),
        spendable_msat=sum(c.spendable_msat for c in chans),
        receivable_msat=sum(c.receivable_msat for c in chans),
        opener="remote" if all(c.opener == "remote" for c in chans) else "local",
        htlcs_in_use=sum(c.htlcs_in_use for c in chans),
        max_htlcs=sum(c.max_htlcs for c in chans),
        peer_connected=any(c.peer_connected for c in chans))
    forwards: Optional[int] = 0
    for m in members:
        n = m.forwards_since_change
        if n is None:
            n = estimate_forwards(m.earned_msat_since_change, m.channel.fee_ppm,
                                  m.channel.fee_base_msat, m.flow)
        forwards = None if n is None or forwards is None else forwards + n
    costs = [m.rebalance_cost_ppm for m in members if m.rebalance_cost_ppm is not None]
    return FeeInputs(channel=channel,
                     flow=_aggregate_flow([m.flow for m in members], channel.short_channel_id, config),
                     earned_msat_since_change=sum(m.earned_msat_since_change for m in members),
                     has_routed_out_ever=any(m.has_routed_out_ever for m in members),
                     rebalance_cost_ppm=max(costs) if costs else None,
                     forwards_since_change=forwards)


def decide_peer_fees(members: Sequence[FeeInputs], states: Mapping[str, FeeState], config,
                     now: float) -> List[FeeDecision]:
    """One decision per channel to the same peer, all with the peer's one fee."""
    members = sorted(members, key=lambda i: scid_key(i.channel.short_channel_id))
    if len(members) == 1:
        return [decide_fee(members[0], states.get(members[0].channel.short_channel_id), config, now)]
    stated = [m for m in members if m.channel.short_channel_id in states]
    lead = stated[0] if stated else members[0]
    peer = decide_fee(aggregate_peer_inputs(members, lead, config),
                      states.get(lead.channel.short_channel_id), config, now)
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
        elif action != A_SET:      # out of line with its peer: align when allowed
            gate, why = hysteresis(ch.fee_ppm, peer.new_fee_ppm, last,
                                   dataclasses.replace(config, fee_change_min_percent=0), now)
            action = A_SET if gate == SET else A_SKIP_HYSTERESIS
            reasons.append(f"aligning with the peer's fee: {why}")
        if action == A_SET:
            last = now
        elif last is None:
            last = peer.new_state.last_broadcast_at
        new_state = dataclasses.replace(peer.new_state, fee_ppm=peer.new_fee_ppm if action == A_SET
                                        else ch.fee_ppm, last_broadcast_at=last)
        out.append(FeeDecision(ch.short_channel_id, ch.fee_ppm,
                               peer.new_fee_ppm if action == A_SET else ch.fee_ppm, action,
                               reasons, peer.stages, new_state, peer.fee_base_msat,
                               peer.rate_msat_per_hour, peer.target_fee_ppm))
    return out


def decide_all_fees(inputs: Iterable[FeeInputs], states: Mapping[str, FeeState], config,
                    now: float) -> List[FeeDecision]:
    """Every managed channel's decision, channels to the same peer decided together."""
    out: List[FeeDecision] = []
    for members in group_by_peer(inputs).values():
        out.extend(decide_peer_fees(members, states, config, now))
    return out


def prune_state(states: Mapping[str, Any], active_scids: Iterable[str]) -> Tuple[Dict[str, Any], int]:
    """Spec feature 19: drop the state of channels no longer in listpeerchannels."""
    active = set(active_scids)
    kept = {scid: s for scid, s in states.items() if scid in active}
    return kept, len(states) - len(kept)
