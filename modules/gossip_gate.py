"""The gossip gate: whether a fee change is worth a channel_update broadcast now.

Pure, `now` passed in. Every broadcast costs the network gossip and the channel its
reputation for stable fees, so:

* never the same fee; never a change below `fee-change-min-percent`;
* never sooner than `fee-broadcast-min-interval-seconds` after the last one;
* a gossip budget per channel: a bucket of BURST tokens, full at start, refilled at one
  per REFILL_HOURS; each broadcast takes one. A median of at most one broadcast per channel per
  day, and at most BURST + a few on any day;
* the change needed grows when the last broadcast is recent: right after one, only a
  change PATIENCE_HOURS / hours-since times the minimum (capped at MAX_PATIENCE_FACTOR)
  goes out, so small corrections wait and gather into one broadcast;
* urgent moves (a fee outside the bounds after an option change, HTLC slots running out)
  skip the patience and the budget, never the same-fee rule.
"""
import dataclasses
import math
from typing import Optional, Tuple

REFILL_HOURS = 27.0   # a little slower than one a day: the full bucket at start stays within a median of one a day
BURST = 2.0
PATIENCE_HOURS = 24.0
MAX_PATIENCE_FACTOR = 4.0

SET, SAME, SMALL, SOON, BUDGET = "set", "same", "small", "soon", "budget"


@dataclasses.dataclass(frozen=True)
class GossipBudget:
    tokens: float = BURST   # starts full: the first moves, furthest from the optimum, go out soonest
    updated_at: Optional[float] = None

    def at(self, now: float) -> float:
        if self.updated_at is None:
            return self.tokens
        return min(BURST, self.tokens + max(0.0, now - self.updated_at) / 3600 / REFILL_HOURS)

    def spend(self, now: float) -> "GossipBudget":
        return GossipBudget(max(0.0, self.at(now) - 1.0), now)


def required_change_percent(min_percent: float, last_broadcast_at: Optional[float], now: float) -> float:
    if last_broadcast_at is None:
        return min_percent
    hours = max(now - last_broadcast_at, 1.0) / 3600
    return min_percent * min(MAX_PATIENCE_FACTOR, max(1.0, PATIENCE_HOURS / hours))


def gate(old_fee: int, new_fee: int, last_broadcast_at: Optional[float], budget: GossipBudget,
         urgent: bool, config, now: float) -> Tuple[str, str]:
    """(SET, SAME, SMALL, SOON or BUDGET, reason)."""
    if new_fee == old_fee:
        return SAME, f"fee stays {old_fee} ppm"
    change = abs(new_fee - old_fee) / old_fee * 100 if old_fee else math.inf
    sign = "+" if new_fee > old_fee else "-"
    if urgent:
        return SET, f"{old_fee} -> {new_fee} ppm ({sign}{change:.0f}%), at once"
    need = required_change_percent(config.fee_change_min_percent, last_broadcast_at, now)
    if change < need:
        return SMALL, (f"{old_fee} -> {new_fee} ppm is {change:.1f}%, below the {need:.0f}% worth a "
                       f"broadcast now")
    if last_broadcast_at is not None and now - last_broadcast_at < config.fee_broadcast_min_interval_seconds:
        since = (now - last_broadcast_at) / 3600
        return SOON, (f"{old_fee} -> {new_fee} ppm waits: last broadcast {since:.1f} h ago, minimum "
                      f"{config.fee_broadcast_min_interval_seconds / 3600:g} h")
    if budget.at(now) < 1.0:
        wait = (1.0 - budget.at(now)) * REFILL_HOURS
        return BUDGET, (f"{old_fee} -> {new_fee} ppm waits {wait:.1f} h for the gossip budget "
                        f"(one broadcast per {REFILL_HOURS:g} h, bursts of {BURST:g})")
    return SET, f"{old_fee} -> {new_fee} ppm ({sign}{change:.0f}%)"


def broadcast_allowed(last_broadcast_at: Optional[float], budget: GossipBudget, config,
                      now: float) -> Tuple[bool, str]:
    """Whether a broadcast that changes no fee (the htlc max alone) may go out now: the same
    interval and the same budget as a fee broadcast."""
    if last_broadcast_at is not None and now - last_broadcast_at < config.fee_broadcast_min_interval_seconds:
        return False, (f"waits: last broadcast {(now - last_broadcast_at) / 3600:.1f} h ago, minimum "
                       f"{config.fee_broadcast_min_interval_seconds / 3600:g} h")
    if budget.at(now) < 1.0:
        return False, f"waits {(1.0 - budget.at(now)) * REFILL_HOURS:.1f} h for the gossip budget"
    return True, "within the gossip budget"
