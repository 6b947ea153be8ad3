"""Exploration: where to put the fee next when the demand estimate is still uncertain.

Pure, `now` passed in. The best-guess fee (modules.liquidity on the demand posterior) is
where the channel should earn most; but the posterior only narrows if the channel is seen
at more than one fee. So, while the price scale is uncertain (log sd above UNCERTAIN_SD)
and the channel has demand, it alternates: the best guess for EXPLOIT_HOURS, then a probe a
factor PROBE_FACTOR above or below it (sides alternate) for PROBE_HOURS. Every period is
evidence at its own fee, so each probe sharpens the estimate at a small cost (a 30% probe
near the optimum of an exponential curve earns ~4% less for its day). A probe is as wide as
the estimate is uncertain (the posterior's log sd, within 1.5x and 3x); the first goes to
the side where the posterior expects more revenue, later ones alternate.

A channel nobody asked to use (no arrival in the lookback) is tried cheaper, a factor
NO_DEMAND_STEP at a time, and never raised, but only once its silence is evidence: a
channel as quiet as the node's quieter ones (`expected_arrivals`, from the caller) would
have seen NO_DEMAND_MIN_EXPECTED arrivals by now. Few arrivals in a day on a channel that
sees 0.1 an hour say nothing. Silence alone never takes the fee more than
NO_DEMAND_FLOOR_FACTOR below the fee the controller started from: lower than that needs
evidence of demand there, such as the node's other channels selling there (`node_sells_at_ppm`:
the lower quartile of the fees its channels with arrivals are at).

A move is sized by the evidence: at most x2 (or /2) while the price scale is uncertain, up
to MAX_STEP_CONFIDENT as the posterior narrows (`step_limit`), and as far as the credible
range of the price scale lies beyond the fee (`credible_ppm`: a fee below the range's lower
end is too low by the evidence, so moving up to that end risks nothing the evidence does
not rule out). The gossip budget limits how often the fee moves, not how far.
"""
import dataclasses
import math
from typing import Optional, Tuple

UNCERTAIN_SD = 0.35
MIN_PROBE_FACTOR = 1.5      # probes are the posterior's log sd wide, within these
MAX_PROBE_FACTOR = 3.0
PROBE_HOURS = 24.0
EXPLOIT_HOURS = 48.0
NO_DEMAND_STEP = 1.5
NO_DEMAND_MIN_HOURS = 24.0
NO_DEMAND_MIN_EXPECTED = 3.0    # P(no arrival) = e^-3 = 5 % for a channel as quiet as the node's quiet ones
NO_DEMAND_FLOOR_FACTOR = 2.0    # silence alone never takes the fee below start / 2
MAX_STEP = 2.0                  # the largest move while the price scale is uncertain ...
MAX_STEP_CONFIDENT = 8.0        # ... and once it is known (the liquidity search spans 8x)
STEP_CONFIDENCE = 0.5           # step limit exp(0.5 / log sd): x2 at sd 0.72, x4 at 0.36, x8 at 0.24
MIN_GAIN = 0.02     # moving to the best guess must be expected to earn 2% more than staying
PROBE_MIN_ARRIVALS = 3.0   # a probe that would see fewer arrivals than this teaches nothing

EXPLOIT, PROBE = "exploit", "probe"


@dataclasses.dataclass(frozen=True)
class Plan:
    fee_ppm: int
    phase: str          # what the fee is, once set: EXPLOIT or PROBE
    reason: str


def probe_factor(log_scale_sd: float) -> float:
    return min(MAX_PROBE_FACTOR, max(MIN_PROBE_FACTOR, math.exp(log_scale_sd)))


def step_limit(log_scale_sd: float) -> float:
    """The largest move (a factor) the evidence allows: wider as the price scale is known."""
    if log_scale_sd <= 0:
        return MAX_STEP_CONFIDENT
    return min(MAX_STEP_CONFIDENT, max(MAX_STEP, math.exp(STEP_CONFIDENCE / log_scale_sd)))


def evidence_limit(current_fee_ppm: int, credible_ppm: Optional[Tuple[float, float]],
                   log_scale_sd: float) -> float:
    """step_limit, widened to reach the credible range of the price scale when the fee lies
    outside it (a fee seen to earn more is a range of one point: reached in one move)."""
    limit = step_limit(log_scale_sd)
    if credible_ppm is not None and current_fee_ppm > 0:
        lo, hi = credible_ppm
        limit = max(limit, lo / current_fee_ppm, current_fee_ppm / max(hi, 1e-9))
    return limit


def no_demand_floor_ppm(start_fee_ppm: Optional[int], min_fee_ppm: int,
                        node_sells_at_ppm: Optional[int] = None) -> int:
    """The lowest fee silence alone may take a channel to: half its start, or lower where the
    node's other channels sell."""
    if start_fee_ppm is None:
        return min_fee_ppm
    floor = int(math.ceil(start_fee_ppm / NO_DEMAND_FLOOR_FACTOR))
    if node_sells_at_ppm is not None:
        floor = min(floor, node_sells_at_ppm)
    return max(min_fee_ppm, floor)


def next_fee(best_fee_ppm: int, current_fee_ppm: int, phase: str, probe_side: int,
             fee_since: Optional[float], log_scale_sd: float, has_demand: bool,
             exposure_hours: float, min_fee_ppm: int, max_fee_ppm: int, now: float,
             gain: float = 1.0, arrivals_per_hour: float = math.inf,
             expected_arrivals: float = math.inf, start_fee_ppm: Optional[int] = None,
             credible_ppm: Optional[Tuple[float, float]] = None,
             node_sells_at_ppm: Optional[int] = None) -> Plan:
    """The fee to aim for, its phase, and why. `fee_since`: when the current fee took effect;
    `probe_side`: +1 the next probe goes above the best guess, -1 below; `gain`: what the
    best guess is expected to earn over staying, as a share (0.05: 5% more). A flat curve
    near its peak moves no fee: a move must be worth MIN_GAIN. `arrivals_per_hour`: what the
    channel is expected to see at the best guess (a probe that would see next to nothing is
    not made: the node's other channels inform it instead). `expected_arrivals`: what a
    channel as quiet as the node's quieter ones would have seen over this exposure;
    `start_fee_ppm`: the fee the controller started from (silence's floor is half of it);
    `credible_ppm`: the price scale's 80 % range from the channel's own evidence (None: too
    little of it), which a move may reach whatever the step limit; `node_sells_at_ppm`: where
    the node's channels with arrivals sell (silence may go that low)."""
    held = (now - fee_since) / 3600 if fee_since is not None else math.inf
    if not has_demand:
        if exposure_hours < NO_DEMAND_MIN_HOURS:
            return Plan(current_fee_ppm, EXPLOIT, f"no arrivals yet in {exposure_hours:.0f} h: waiting")
        if expected_arrivals < NO_DEMAND_MIN_EXPECTED:
            return Plan(current_fee_ppm, EXPLOIT, f"no arrivals in {exposure_hours:.0f} h, but a channel as quiet "
                        f"as the node's quieter ones would see {expected_arrivals:.1f}: no evidence of no "
                        f"demand yet, fee held")
        floor = no_demand_floor_ppm(start_fee_ppm, min_fee_ppm, node_sells_at_ppm)
        cheaper = max(floor, min(current_fee_ppm, int(current_fee_ppm / NO_DEMAND_STEP)))
        if cheaper >= current_fee_ppm:
            return Plan(current_fee_ppm, EXPLOIT, f"no arrivals in {exposure_hours:.0f} h; held at "
                        f"{current_fee_ppm} ppm: silence alone goes no lower than half the fee it started "
                        f"from ({start_fee_ppm} ppm)"
                        + ("" if node_sells_at_ppm is None else
                           f" or than demand is seen elsewhere ({node_sells_at_ppm} ppm: the node's "
                           f"selling channels, the network's prices into its peer)"))
        return Plan(cheaper, EXPLOIT, f"no arrivals in {exposure_hours:.0f} h at up to {current_fee_ppm} ppm "
                    f"(a quiet channel would see {expected_arrivals:.1f}): trying {cheaper} ppm, never higher")
    uncertain = log_scale_sd > UNCERTAIN_SD and arrivals_per_hour * PROBE_HOURS >= PROBE_MIN_ARRIVALS
    if phase == PROBE:
        if held < PROBE_HOURS:
            return Plan(current_fee_ppm, PROBE, f"probing at {current_fee_ppm} ppm for {PROBE_HOURS:g} h "
                        f"({held:.0f} h so far)")
        target, plan_phase, why = best_fee_ppm, EXPLOIT, "probe done: back to the best guess"
    elif uncertain and held >= EXPLOIT_HOURS:
        factor = probe_factor(log_scale_sd) ** (1 if probe_side >= 0 else -1)
        target = int(round(best_fee_ppm * factor))
        plan_phase = PROBE
        why = (f"demand still uncertain (log sd {log_scale_sd:.2f}): probing {'above' if factor > 1 else 'below'}"
               f" the best guess {best_fee_ppm} ppm")
    elif best_fee_ppm != current_fee_ppm and gain < MIN_GAIN and min_fee_ppm <= current_fee_ppm <= max_fee_ppm:
        return Plan(current_fee_ppm, EXPLOIT, f"best guess {best_fee_ppm} ppm would earn {gain:+.1%}: not worth "
                    f"a move (below {MIN_GAIN:.0%})")
    else:
        target, plan_phase = best_fee_ppm, EXPLOIT
        why = "best guess" + (f" (uncertain: a probe after {EXPLOIT_HOURS:g} h at it)" if uncertain else "")
    limit = evidence_limit(current_fee_ppm, credible_ppm, log_scale_sd)
    lo, hi = step_bounds(current_fee_ppm, limit)
    bounded = min(max(target, lo), hi)
    bounded = min(max(bounded, min_fee_ppm), max_fee_ppm)
    if bounded != target:
        why += f"; one step at most (x{limit:.1f}, as far as the evidence allows): {bounded} ppm on the way to {target}"
    elif max(target, current_fee_ppm) > MAX_STEP * max(min(target, current_fee_ppm), 1):
        why += f"; a x{max(target, current_fee_ppm) / max(min(target, current_fee_ppm), 1):.1f} move: the evidence allows x{limit:.1f}"
    return Plan(bounded, plan_phase, why)


def step_bounds(current_fee_ppm: int, limit: float = MAX_STEP) -> Tuple[int, int]:
    return int(current_fee_ppm / limit), int(math.ceil(current_fee_ppm * limit))
