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

A channel nobody asked to use (no arrival in the lookback, after a day of exposure) is
tried cheaper, a factor NO_DEMAND_STEP at a time, and never raised.

No move is bigger than MAX_STEP (x2 or /2), so one wrong estimate costs one step.
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
MAX_STEP = 2.0
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


def next_fee(best_fee_ppm: int, current_fee_ppm: int, phase: str, probe_side: int,
             fee_since: Optional[float], log_scale_sd: float, has_demand: bool,
             exposure_hours: float, min_fee_ppm: int, max_fee_ppm: int, now: float,
             gain: float = 1.0, arrivals_per_hour: float = math.inf) -> Plan:
    """The fee to aim for, its phase, and why. `fee_since`: when the current fee took effect;
    `probe_side`: +1 the next probe goes above the best guess, -1 below; `gain`: what the
    best guess is expected to earn over staying, as a share (0.05: 5% more). A flat curve
    near its peak moves no fee: a move must be worth MIN_GAIN. `arrivals_per_hour`: what the
    channel is expected to see at the best guess (a probe that would see next to nothing is
    not made: the node's other channels inform it instead)."""
    held = (now - fee_since) / 3600 if fee_since is not None else math.inf
    if not has_demand:
        if exposure_hours < NO_DEMAND_MIN_HOURS:
            return Plan(current_fee_ppm, EXPLOIT, f"no arrivals yet in {exposure_hours:.0f} h: waiting")
        cheaper = max(min_fee_ppm, min(current_fee_ppm, int(current_fee_ppm / NO_DEMAND_STEP)))
        return Plan(cheaper, EXPLOIT, f"no arrivals in {exposure_hours:.0f} h at up to {current_fee_ppm} ppm:"
                    f" trying {cheaper} ppm, never higher")
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
    bounded = min(max(target, int(current_fee_ppm / MAX_STEP)), int(math.ceil(current_fee_ppm * MAX_STEP)))
    bounded = min(max(bounded, min_fee_ppm), max_fee_ppm)
    if bounded != target:
        why += f"; one step at most: {bounded} ppm on the way to {target}"
    return Plan(bounded, plan_phase, why)


def step_bounds(current_fee_ppm: int) -> Tuple[int, int]:
    return int(current_fee_ppm / MAX_STEP), int(math.ceil(current_fee_ppm * MAX_STEP))
