"""The daily rebalance fee budget: the pure rules the database's ledger applies.

The ledger itself lives in SQLite (modules/database.py, table budget_ledger): a job
*reserves* its worst-case fee before it starts; when it ends its reservation becomes what
it really cost (*spent*), timed at reconciliation. A reservation holds until reconciled,
whatever its age. The limit covers spent-in-the-last-24-hours plus everything still
reserved; inside one write transaction (BEGIN IMMEDIATE) the database sums both and asks
`reservation_fits` (through the `budget_rule(limit)` callable) before it inserts.

Why spent entries carry the reconciliation time: a job pays somewhere between the two
times, so only the later one keeps every payment inside the windows that check it. With
that, and actual cost <= reservation, the fees paid in any 24 hours never exceed the
limit (tests/test_budget_ledger.py checks it on random interleavings, on the database).

`outside_spend` is the rule for a ledger lost with its database: what sling's stats say
may have been spent in the last 24 h counts as spent.
"""
from typing import Callable, Iterable, Optional, Tuple

LOCAL_TIME_SLACK_SECONDS = 3600   # sling's local-time stamp: a daylight-saving hour either way


def _sat(msat: int) -> str:
    text = f"{msat / 1000:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def reservation_fits(spent_24h_msat: int, reserved_msat: int, amount_msat: int,
                     limit_msat: int) -> Tuple[bool, str]:
    """The budget rule on totals: spent in 24 h + reserved + the new reservation <= limit.

    The database applies it to the totals it reads inside its write transaction.
    """
    available = max(0, limit_msat - spent_24h_msat - reserved_msat)
    if amount_msat <= 0:
        return False, f"reservation must be positive, not {_sat(amount_msat)} sat"
    if amount_msat > available:
        return False, (f"budget exhausted: worst-case fee {_sat(amount_msat)} sat > available "
                       f"{_sat(available)} sat (limit {_sat(limit_msat)} sat, spent 24h "
                       f"{_sat(spent_24h_msat)} sat, reserved {_sat(reserved_msat)} sat)")
    return True, f"worst-case fee {_sat(amount_msat)} sat fits: available {_sat(available)} sat"


def budget_rule(limit_msat: int) -> Callable[[int, int, int], bool]:
    """`fits(spent_24h_msat, reserved_msat, amount_msat)` for a fixed limit (the callable
    JobManager hands to Database.start_job_reserving)."""
    return lambda spent, reserved, amount: reservation_fits(spent, reserved, amount, limit_msat)[0]


def outside_spend(spends: Iterable[Tuple[str, int, Optional[float]]], unreadable: Iterable[str],
                  limit_msat: int, window_seconds: float, now: float) -> Tuple[int, str]:
    """What may have been spent on rebalances the ledger does not know of, in the last window.

    spends: (scid, fee_bound_msat, last_rebalance time or None) from sling's stats of each
    channel; their totals cover sling's whole stats window (30 days), a superset of ours, so
    a channel whose last rebalance falls inside our window counts its whole total: an upper
    bound. A channel whose stats could not be read may have spent anything: the limit.
    Returns (msat to count as spent now, capped at the limit; why).
    """
    unreadable = sorted(unreadable)
    if unreadable:
        return limit_msat, (f"sling's stats of {len(unreadable)} channels could not be read "
                            f"({', '.join(unreadable[:3])}{'...' if len(unreadable) > 3 else ''}): "
                            f"the whole daily budget counts as spent")
    start = now - window_seconds - LOCAL_TIME_SLACK_SECONDS
    recent = [(scid, fee) for scid, fee, last in spends
              if fee > 0 and (last is None or last > start)]
    if not recent:
        return 0, "sling's stats show no rebalance in the last 24 h"
    total = sum(fee for _, fee in recent)
    counted = min(total, limit_msat)
    return counted, (f"sling's stats show rebalances in the last 24 h on {len(recent)} channels, "
                     f"at most {_sat(total)} sat in fees over sling's window: {_sat(counted)} sat "
                     f"counts as spent")


def wallet_reserve_ok(onchain_msat: int, channel_local_msat_total: int, config) -> Tuple[bool, str]:
    """No rebalancing while on-chain plus our channel balances are below the wallet reserve."""
    total = onchain_msat + channel_local_msat_total
    minimum = config.min_wallet_reserve_sats * 1000
    if total < minimum:
        return False, (f"wallet reserve: on-chain {_sat(onchain_msat)} sat + channels "
                       f"{_sat(channel_local_msat_total)} sat = {_sat(total)} sat < minimum "
                       f"{_sat(minimum)} sat")
    return True, f"wallet {_sat(total)} sat >= reserve {_sat(minimum)} sat"
