"""The stages of the fee decision, each a small pure function that returns its result
and its reason. `modules.fee_controller.decide_fee` composes them in one visible list.

1. observe       the revenue of the fee in place since it was set (`Observation`).
2. hill_climb    perturb and observe on the controller's own *base* fee (`ClimbOutcome`).
3. flow_bias     SOURCE leans up, SINK leans down (x1.05 / x0.95).
4. scarcity      local / capacity below the threshold: x1 at the threshold up to x3 at zero.
5. congestion    HTLC slots nearly full: priced at the ceiling.
6. bounds        [min-fee-ppm, max-fee-ppm], never below the refill (rebalance) cost.
7. hysteresis    only broadcast a change that is big enough and not too soon.

How the hill climb copes with noisy revenue (tuned on bench/bench_fee_convergence.py):

* A trial fee is judged against a *reference*, the best recent observation, with a score
  test on the forward counts (`compare`): a trial is judged as soon as the difference is
  clear (|z| >= DECISIVE_Z), and at the latest after MAX_OBSERVATION_FACTOR x the minimum
  observation time. A period only becomes the reference with MIN_REFERENCE_FORWARDS
  behind it, so one lucky afternoon does not become the yardstick.
* Steps are relative (x(1+s) up, /(1+s) down). The first probe, and every probe of a
  settled fee, is FLAT_STEP_FACTOR x fee-step-percent (45% by default): a smaller step's
  revenue change drowns in the noise near the optimum, where the curve is flat.
* Better: the trial becomes the reference, same direction, the step doubles (up to
  MAX_STEP_PERCENT): from far away the fee reaches the right region in a few moves.
  Worse: the step halves and the next trial is on the other side of the reference
  ("bracketed"); a worse probe of a settled fee, or a step below the minimum, goes back
  to the reference and settles.
  Unclear at the deadline: before anything was worse, the trial goes further out on the
  same side (a bigger step shows a clearer difference); otherwise the two fees earn the
  same, the peak of a concave curve lies between them, and the climb settles half-way.
* Settled: the fee stays put. Demand is watched: the latest SHIFT_WINDOW_HOURS against
  the rest of the settled period; a clear shift (|z| >= SHIFT_Z) is followed at once in
  its direction and the climb starts afresh. Otherwise one neighbour is probed after
  SETTLE_HOURS, alternating sides; each probe that confirms the fee doubles the wait, up
  to SETTLE_MAX_HOURS, so a channel that found its price broadcasts rarely.
* A channel that earned nothing for the longest observation is probed up when cheap and
  down when dear (thirds of [min-fee-ppm, max-fee-ppm] on a log scale), else left alone.
"""
import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

from modules.models import SINK, SOURCE, Channel, ChannelFlow

# Climb modes.
CLIMB, PROBE, SETTLED = "climb", "probe", "settled"
# Pricing regimes: the climb compares only periods priced in the same regime and pauses
# while scarcity or congestion pricing overrides it.
NORMAL, SCARCE, CONGESTED = "normal", "scarce", "congested"

# --- tunables (module defaults; candidates for options) -------------------------------
MAX_OBSERVATION_FACTOR = 6.0   # judge a trial at the latest after 6 x fee-min-observation-hours
DECISIVE_Z = 1.5               # |z| at which a revenue difference counts as real
STEP_GROWTH = 2.0              # step x this after an improvement
STEP_SHRINK = 0.5              # step x this after a worse trial
MAX_STEP_PERCENT = 100.0       # largest step: doubling or halving the fee
FLAT_STEP_FACTOR = 3.0         # probes, and "flat" only counts, at 3 x fee-step-percent or more
MIN_REFERENCE_FORWARDS = 30    # a period becomes the reference only after this many forwards
SETTLE_HOURS = 24.0            # a settled fee probes a neighbour after this long, doubling
SETTLE_MAX_HOURS = 192.0       # each time a probe confirms it, up to this
SHIFT_WINDOW_HOURS = 12.0      # demand-shift watch: the latest window against the rest
SHIFT_Z = 3.0                  # |z| that counts as a demand shift
FLOW_BIAS = {SOURCE: 1.05, SINK: 0.95}
SCARCITY_MAX_FACTOR = 3.0
IDLE_CHEAP_FRACTION = 1 / 3    # earned nothing below min*(max/min)^(1/3): probe up
IDLE_DEAR_FRACTION = 2 / 3     # earned nothing above min*(max/min)^(2/3): probe down


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What one stage did: the fee after it, its multiplier (1.0 when it did nothing)."""
    stage: str
    fee_ppm: int
    factor: float
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Observation:
    """Revenue seen while one base fee was in place (the current trial or a reference)."""
    fee_ppm: int                 # the fee charged during the period
    base_fee_ppm: int            # the hill climb's base fee behind it
    earned_msat: int
    forwards: Optional[int]      # None when neither counted nor estimable
    hours: float
    ended_at: float              # unix seconds
    bias: float = 1.0            # flow bias in force (comparisons need equal bias)

    @property
    def rate_msat_per_hour(self) -> float:
        return self.earned_msat / self.hours if self.hours > 0 else 0.0

    def minus(self, earlier: "Observation") -> "Observation":
        """The part of this (cumulative) period after `earlier`, a prefix of it."""
        forwards = None
        if self.forwards is not None and earlier.forwards is not None:
            forwards = max(0, self.forwards - earlier.forwards)
        return dataclasses.replace(self, earned_msat=max(0, self.earned_msat - earlier.earned_msat),
                                   forwards=forwards, hours=max(0.0, self.hours - earlier.hours))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> Optional["Observation"]:
        if d is None:
            return None
        return cls(fee_ppm=int(d["fee_ppm"]), base_fee_ppm=int(d["base_fee_ppm"]),
                   earned_msat=int(d["earned_msat"]),
                   forwards=None if d.get("forwards") is None else int(d["forwards"]),
                   hours=float(d["hours"]), ended_at=float(d["ended_at"]),
                   bias=float(d.get("bias", 1.0)))


@dataclasses.dataclass(frozen=True)
class ClimbOutcome:
    """The hill climb's proposal. `on_set` holds the state fields to persist if the new fee
    is broadcast, `on_hold` those to persist if the fee stays where it is."""
    base_fee_ppm: int
    moved: bool
    verdict: str
    reason: str
    on_set: Dict[str, Any]
    on_hold: Dict[str, Any]

    def stage(self, old_base: int) -> StageResult:
        factor = self.base_fee_ppm / old_base if old_base else 1.0
        return StageResult("hill_climb", self.base_fee_ppm, round(factor, 4), self.reason)


# --- 1. observe --------------------------------------------------------------------------
def max_observation_hours(config) -> float:
    return config.fee_min_observation_hours * MAX_OBSERVATION_FACTOR


def estimate_forwards(earned_msat: int, fee_ppm: int, fee_base_msat: int,
                      flow: Optional[ChannelFlow]) -> Optional[int]:
    """Forwards behind `earned_msat`, from the channel's average outgoing amount."""
    if earned_msat <= 0:
        return 0
    if flow is None or flow.out_count <= 0 or flow.out_msat <= 0:
        return None
    per_forward = fee_base_msat + fee_ppm * (flow.out_msat / flow.out_count) / 1e6
    return max(1, round(earned_msat / per_forward)) if per_forward > 0 else None


def observe(obs: Observation, effective_fee_ppm: int, config) -> Tuple[bool, StageResult]:
    """Ready to judge once the fee has been in place for the minimum observation time."""
    need = config.fee_min_observation_hours
    seen = f"{obs.rate_msat_per_hour / 1000:.1f} sat/h over {obs.hours:.1f} h at {effective_fee_ppm} ppm"
    if obs.forwards is not None:
        seen += f" ({obs.forwards} forwards)"
    if obs.hours < need:
        return False, StageResult("observe", effective_fee_ppm, 1.0,
                                  f"observing: {seen}; judged after {need:g} h "
                                  f"({need - obs.hours:.1f} h left)")
    return True, StageResult("observe", effective_fee_ppm, 1.0, f"earned {seen}")


def compare(cur: Observation, ref: Observation) -> float:
    """z-score of `cur` earning more than `ref` (> 0) or less (< 0), judged on the forward
    counts: if both periods earned the same per hour at the average amount, the forwards
    would split between them in proportion to hours / fee, so given their total the count
    of `cur` is binomial; z is its score. Precise with few forwards (an empty day after a
    busy week is a clear drop), and blind to the noise of the amounts."""
    if cur.earned_msat <= 0 and ref.earned_msat <= 0:
        return 0.0
    if cur.forwards is None or ref.forwards is None or cur.fee_ppm <= 0 or ref.fee_ppm <= 0:
        diff = cur.rate_msat_per_hour - ref.rate_msat_per_hour   # noise unknown: plain
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    n_cur = max(cur.forwards, 1 if cur.earned_msat > 0 else 0)
    n_ref = max(ref.forwards, 1 if ref.earned_msat > 0 else 0)
    total = n_cur + n_ref
    a_cur, a_ref = cur.hours / cur.fee_ppm, ref.hours / ref.fee_ppm
    if total == 0 or a_cur <= 0 or a_ref <= 0:
        return 0.0
    p0 = a_cur / (a_cur + a_ref)
    return (n_cur - total * p0) / math.sqrt(total * p0 * (1 - p0))


# --- 2. hill climb -----------------------------------------------------------------------
def step_bounds(config) -> Tuple[float, float, float]:
    """(smallest, flat, largest) step in percent. The smallest still clears the gossip
    threshold; an unclear trial only counts as flat at the flat step or wider, because a
    small step's revenue change drowns in the noise wherever the fee is."""
    base = config.fee_step_percent
    lo = max(config.fee_change_min_percent * 1.25, base / 4, 1.0)
    hi = max(lo, MAX_STEP_PERCENT)
    return lo, min(hi, max(lo, base * FLAT_STEP_FACTOR)), hi


def step_fee(base: int, direction: int, step_percent: float, config) -> int:
    """One step from `base`: x(1+s) up or /(1+s) down, at least fee-step-min-ppm, in bounds."""
    s = step_percent / 100
    if direction > 0:
        fee = max(round(base * (1 + s)), base + config.fee_step_min_ppm)
    else:
        fee = min(round(base / (1 + s)), base - config.fee_step_min_ppm)
    return min(max(fee, config.min_fee_ppm), config.max_fee_ppm)


def idle_direction(base: int, config) -> int:
    """Earned nothing: +1 when cheap, -1 when dear, 0 in between (nothing to learn)."""
    lo, hi = max(config.min_fee_ppm, 1), max(config.max_fee_ppm, 1)
    span = hi / lo
    if base < lo * span ** IDLE_CHEAP_FRACTION:
        return 1
    if base > lo * span ** IDLE_DEAR_FRACTION:
        return -1
    return 0


def settle_hours(confirmations: int) -> float:
    return min(SETTLE_MAX_HOURS, SETTLE_HOURS * 2 ** min(confirmations, 16))


def _up(d: int) -> str:
    return "up" if d > 0 else "down"


def hill_climb(state, cur: Observation, config, now: float) -> ClimbOutcome:
    """Perturb and observe on the base fee. `state` is a FeeState; `cur` the period since
    the fee was last set; the caller has checked the minimum observation time."""
    base, ref, d = state.base_fee_ppm, state.reference, state.direction or 1
    lo_step, flat_step, hi_step = step_bounds(config)
    max_h = max_observation_hours(config)
    # a probe that ends in settling again confirms the fee: the next probe comes later
    confirmed = state.confirmations + 1 if state.mode == PROBE else 0

    def settle_fields(direction: int) -> Dict[str, Any]:
        return {"mode": SETTLED, "settled_at": now, "reference": None, "checkpoint": None,
                "direction": direction, "confirmations": confirmed}

    def move(to: int, verdict: str, reason: str, **on_set: Any) -> ClimbOutcome:
        if to == base:  # a step that bounds swallowed: the climb is at an edge, settle
            return stay(verdict, reason + f"; blocked at {base} ppm, settling",
                        settle=True, next_direction=-on_set.get("direction", d))
        return ClimbOutcome(to, True, verdict, reason, on_set,
                            settle_fields(-on_set.get("direction", d)))

    def stay(verdict: str, reason: str, settle: bool = False, next_direction: int = d,
             **on_hold: Any) -> ClimbOutcome:
        if settle:
            on_hold = {**settle_fields(next_direction), **on_hold}
        return ClimbOutcome(base, False, verdict, reason, {}, on_hold)

    def trial(frm: Observation, direction: int, step: float, verdict: str, why: str,
              mode: str = CLIMB, reference: Optional[Observation] = None) -> ClimbOutcome:
        """The next trial: `step` from `frm`'s base fee, judged against `reference` (by
        default `frm`; None: the trial period itself becomes the reference)."""
        to = step_fee(frm.base_fee_ppm, direction, step, config)
        return move(to, verdict, f"{why}: trying {to} ppm ({_up(direction)} {step:.0f}% from "
                    f"{frm.base_fee_ppm})", mode=mode,
                    reference=frm if reference is None and verdict != "shift" else reference,
                    step_percent=step, direction=direction, settled_at=None, checkpoint=None,
                    bracketed=verdict in ("fell", "wider") and state.bracketed or verdict == "fell",
                    confirmations=state.confirmations if verdict in ("probe", "wider") else 0)

    if state.mode == SETTLED:
        settled_h = (now - (state.settled_at or now)) / 3600
        if settled_h >= settle_hours(state.confirmations):
            return trial(cur, d, flat_step, "probe", f"settled {settled_h:.0f} h at {base} ppm",
                         mode=PROBE)
        cp = state.checkpoint
        if cp is None or cp.hours > cur.hours:
            if cur.hours >= SHIFT_WINDOW_HOURS:
                return stay("settled", f"settled at {base} ppm; watching demand", checkpoint=cur)
            return stay("settled", f"settled at {base} ppm")
        recent = cur.minus(cp)
        if recent.hours < SHIFT_WINDOW_HOURS:
            return stay("settled", f"settled at {base} ppm")
        z = compare(recent, cp)
        if abs(z) >= SHIFT_Z:   # follow it at once; the trial is measured afresh
            return trial(recent, 1 if z > 0 else -1, flat_step, "shift",
                         f"demand shifted at {base} ppm ({recent.rate_msat_per_hour / 1000:.1f} vs "
                         f"{cp.rate_msat_per_hour / 1000:.1f} sat/h, z={z:+.1f})")
        return stay("settled", f"settled at {base} ppm; demand steady (z={z:+.1f})", checkpoint=cur)

    if ref is not None and (ref.bias != cur.bias or ref.base_fee_ppm == cur.base_fee_ppm):
        ref = None  # not comparable: a different flow bias, or nothing was perturbed

    if ref is None or (cur.earned_msat <= 0 and ref.earned_msat <= 0):
        if cur.earned_msat > 0:
            if cur.forwards is not None and cur.forwards < MIN_REFERENCE_FORWARDS and cur.hours < max_h:
                return stay("wait", f"measuring the reference at {base} ppm: {cur.forwards} forwards "
                            f"so far, up to {max_h:g} h")
            return trial(cur, d, flat_step, "first", "reference measured")
        if cur.hours < max_h:
            return stay("wait", f"no fees earned at {base} ppm yet; waiting up to {max_h:g} h")
        idle = idle_direction(base, config)
        if idle == 0:
            return stay("idle", f"earned nothing in {cur.hours:.0f} h at {base} ppm; holding",
                        settle=True)
        # successive idle probes the same way take growing steps
        step = min(hi_step, state.step_percent * STEP_GROWTH) \
            if ref is not None and idle == d else flat_step
        return trial(cur, idle, step, "idle", f"earned nothing in {cur.hours:.0f} h at {base} ppm "
                     f"({'cheap' if idle > 0 else 'dear'})")

    z = compare(cur, ref)
    vs = (f"{cur.rate_msat_per_hour / 1000:.1f} sat/h at {cur.fee_ppm} ppm vs "
          f"{ref.rate_msat_per_hour / 1000:.1f} at {ref.fee_ppm} (z={z:+.1f})")
    step = state.step_percent
    measured = cur.forwards is None or cur.forwards >= MIN_REFERENCE_FORWARDS or cur.hours >= max_h
    if z >= DECISIVE_Z and measured:   # it becomes the reference: measured well enough
        return trial(cur, d, min(hi_step, step * STEP_GROWTH), "rose", f"better: {vs}")
    if z <= -DECISIVE_Z:
        step *= STEP_SHRINK
        if state.mode == PROBE or step < lo_step:
            return move(ref.base_fee_ppm, "fell", f"worse: {vs}; back to {ref.base_fee_ppm} ppm, settling",
                        **settle_fields(-d))
        return trial(ref, -d, step, "fell", f"worse: {vs}; other side")
    if cur.hours < max_h:
        return stay("wait", f"unclear: {vs}; observing up to {max_h:g} h")
    if step < flat_step and not state.bracketed:   # too small to tell: look further out
        return trial(ref, d, min(hi_step, max(flat_step, step * STEP_GROWTH)), "wider",
                     f"unclear after {cur.hours:.0f} h: {vs}", mode=state.mode)
    # as good as each other: a concave curve peaks between them, settle half-way
    mid = round(math.sqrt(max(ref.base_fee_ppm, 1) * max(base, 1)))
    if abs(mid - base) <= base * config.fee_change_min_percent / 100:
        return stay("flat", f"flat: {vs} after {cur.hours:.0f} h; settling at {base} ppm",
                    settle=True, next_direction=-d)
    return move(mid, "flat", f"flat: {vs} after {cur.hours:.0f} h; settling half-way at "
                f"{mid} ppm", **settle_fields(-d))


# --- 3.-6. pricing stages: fee in, StageResult out ---------------------------------------
def flow_bias_factor(flow: Optional[ChannelFlow]) -> float:
    return FLOW_BIAS.get(flow.state, 1.0) if flow is not None else 1.0


def flow_bias(fee: float, inputs, config) -> StageResult:
    factor = flow_bias_factor(inputs.flow)
    if factor == 1.0:
        state = inputs.flow.state if inputs.flow is not None else "unknown"
        return StageResult("flow_bias", round(fee), 1.0, f"flow {state}: no bias")
    lean = "up: our side drains" if factor > 1 else "down: our side fills"
    return StageResult("flow_bias", round(fee * factor), factor,
                       f"flow {inputs.flow.state}: x{factor:g}, leaning {lean}")


def scarcity_factor(local_ratio: float, threshold: float) -> float:
    """1 at or above the threshold, rising linearly to SCARCITY_MAX_FACTOR at zero."""
    if threshold <= 0 or local_ratio >= threshold:
        return 1.0
    short = 1.0 - max(0.0, local_ratio) / threshold
    return 1.0 + (SCARCITY_MAX_FACTOR - 1.0) * short


def scarcity_exempt(channel: Channel, has_routed_out_ever: bool) -> bool:
    """A channel the peer opened that never routed out is still breaking in."""
    return channel.opener == "remote" and not has_routed_out_ever


def scarcity(fee: float, inputs, config) -> StageResult:
    ch = inputs.channel
    ratio = ch.local_ratio
    factor = scarcity_factor(ratio, config.scarcity_threshold)
    if factor == 1.0:
        return StageResult("scarcity", round(fee), 1.0,
                           f"local {ratio:.0%} of capacity: no scarcity")
    if scarcity_exempt(ch, inputs.has_routed_out_ever):
        return StageResult("scarcity", round(fee), 1.0, f"local {ratio:.0%}: exempt, peer-opened "
                           f"channel that has not routed out yet")
    return StageResult("scarcity", round(fee * factor), round(factor, 4),
                       f"local {ratio:.0%} below {config.scarcity_threshold:.0%}: x{factor:.2f}")


def is_congested(channel: Channel, config) -> bool:
    return channel.max_htlcs > 0 and \
        channel.htlcs_in_use / channel.max_htlcs >= config.htlc_congestion_threshold


def congestion(fee: float, inputs, config) -> StageResult:
    ch = inputs.channel
    if not is_congested(ch, config):
        return StageResult("congestion", round(fee), 1.0, "HTLC slots free")
    to = config.max_fee_ppm
    return StageResult("congestion", to, round(to / fee, 4) if fee else 1.0,
                       f"{ch.htlcs_in_use}/{ch.max_htlcs} HTLC slots in use: priced at the "
                       f"ceiling {to} ppm")


def bounds(fee: float, inputs, config) -> StageResult:
    lo, hi = config.min_fee_ppm, config.max_fee_ppm
    floor, why = lo, f"min {lo} ppm"
    cost = inputs.rebalance_cost_ppm
    if cost is not None and cost > lo:
        floor, why = min(cost, hi), f"refill cost {cost} ppm"
    to = min(max(round(fee), floor), hi)
    if to > round(fee):
        reason = f"raised to {to} ppm ({why})"
    elif to < round(fee):
        reason = f"capped at {to} ppm (max {hi} ppm)"
    else:
        reason = f"within [{floor}, {hi}] ppm"
    return StageResult("bounds", to, round(to / fee, 4) if fee else 1.0, reason)


def pricing_regime(inputs, config) -> str:
    if is_congested(inputs.channel, config):
        return CONGESTED
    if scarcity_factor(inputs.channel.local_ratio, config.scarcity_threshold) > 1.0 and \
            not scarcity_exempt(inputs.channel, inputs.has_routed_out_ever):
        return SCARCE
    return NORMAL


# --- 7. gossip hysteresis ----------------------------------------------------------------
SET, SAME, SMALL, SOON = "set", "same", "small", "soon"


def hysteresis(old_fee: int, new_fee: int, last_broadcast_at: Optional[float], config,
               now: float) -> Tuple[str, str]:
    """(SET, SAME, SMALL or SOON, reason): never the same fee, never a change below
    fee-change-min-percent, never sooner than fee-broadcast-min-interval-seconds."""
    if new_fee == old_fee:
        return SAME, f"fee stays {old_fee} ppm"
    change = abs(new_fee - old_fee) / old_fee * 100 if old_fee else math.inf
    if change < config.fee_change_min_percent:
        return SMALL, (f"{old_fee} -> {new_fee} ppm is {change:.1f}%, below the "
                       f"{config.fee_change_min_percent:g}% worth a broadcast")
    if last_broadcast_at is not None:
        since = now - last_broadcast_at
        need = config.fee_broadcast_min_interval_seconds
        if since < need:
            return SOON, (f"{old_fee} -> {new_fee} ppm waits: last broadcast {since / 3600:.1f} h "
                          f"ago, minimum {need / 3600:g} h")
    sign = "+" if new_fee > old_fee else "-"
    return SET, f"{old_fee} -> {new_fee} ppm ({sign}{change:.0f}%)"
