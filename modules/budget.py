"""The daily rebalance fee budget: pure rules over a ledger of entries.

A job *reserves* its worst-case fee before it starts; when it ends, `reconcile` replaces
the reservation with what it really cost (*spent*, timed at reconciliation). A
reservation holds until it is reconciled, whatever its age. The limit covers
spent-in-the-last-24-hours plus everything still reserved.

Why spent entries carry the reconciliation time, not the reservation time: a job pays
its fees somewhere between the two, so only the later time keeps every payment inside
the windows that check it. With that, and actual cost <= reservation, the fees paid in
any 24 hours never exceed the limit (tests/test_budget_rules.py checks it on random
interleavings).

No clock, no SQL: the database layer runs the same rules inside one transaction
(BEGIN IMMEDIATE): sum what is reserved and what was spent after `window_start(now)`,
ask `reservation_fits` (or the `budget_rule(limit)` callable), insert the row, commit.
Older spent entries never change the answer.
"""
import dataclasses
from typing import Callable, Iterable, List, NamedTuple, Tuple

RESERVED = "reserved"
SPENT = "spent"
KINDS = (RESERVED, SPENT)
WINDOW_SECONDS = 24 * 3600


@dataclasses.dataclass(frozen=True)
class BudgetEntry:
    kind: str           # "reserved" or "spent"
    amount_msat: int
    time: float         # unix seconds: reservation time, or reconciliation time when spent
    job_id: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"budget entry kind must be one of {KINDS}, not {self.kind!r}")
        if self.amount_msat < 0:
            raise ValueError(f"budget entry amount must not be negative: {self.amount_msat}")


class BudgetStatus(NamedTuple):
    spent_24h_msat: int
    reserved_msat: int
    available_msat: int


def window_start(now: float) -> float:
    """Spent entries at or before this time no longer count against the budget."""
    return now - WINDOW_SECONDS


def _sat(msat: int) -> str:
    text = f"{msat / 1000:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def budget_status(entries: Iterable[BudgetEntry], limit_msat: int, now: float) -> BudgetStatus:
    """(spent in the last 24 h, reserved now, what is left of the limit; never negative).

    Spent entries from the future (a clock that went back) count, to stay on the safe side.
    """
    start = window_start(now)
    spent = reserved = 0
    for e in entries:
        if e.kind == RESERVED:
            reserved += e.amount_msat
        elif e.time > start:
            spent += e.amount_msat
    return BudgetStatus(spent, reserved, max(0, limit_msat - spent - reserved))


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


def can_reserve(entries: Iterable[BudgetEntry], limit_msat: int, amount_msat: int,
                now: float) -> Tuple[bool, str]:
    """Whether a reservation of `amount_msat` fits the budget now, and why (or why not)."""
    spent, reserved, _ = budget_status(entries, limit_msat, now)
    return reservation_fits(spent, reserved, amount_msat, limit_msat)


def reserve(entries: Iterable[BudgetEntry], limit_msat: int, job_id: str, amount_msat: int,
            now: float) -> Tuple[List[BudgetEntry], bool, str]:
    """The ledger with a reservation for `job_id` added, if it fits; else the ledger unchanged.

    Returns (entries, reserved?, reason). One reservation per job.
    """
    entries = list(entries)
    if any(e.kind == RESERVED and e.job_id == job_id for e in entries):
        return entries, False, f"job {job_id} already holds a reservation"
    ok, reason = can_reserve(entries, limit_msat, amount_msat, now)
    if ok:
        entries.append(BudgetEntry(RESERVED, amount_msat, now, job_id))
    return entries, ok, reason


def reconcile(entries: Iterable[BudgetEntry], job_id: str, actual_cost_msat: int,
              now: float) -> List[BudgetEntry]:
    """The ledger with the job's reservation replaced by its actual cost, spent at `now`.

    A job without a reservation but already spent is left alone (a repeated reconcile does
    not count twice); a job with neither records its cost (money spent is money spent).
    """
    if actual_cost_msat < 0:
        raise ValueError(f"actual cost must not be negative: {actual_cost_msat}")
    entries = list(entries)
    kept = [e for e in entries if not (e.kind == RESERVED and e.job_id == job_id)]
    if len(kept) == len(entries) and any(e.kind == SPENT and e.job_id == job_id for e in entries):
        return entries
    kept.append(BudgetEntry(SPENT, actual_cost_msat, now, job_id))
    return kept


def prune(entries: Iterable[BudgetEntry], now: float) -> List[BudgetEntry]:
    """Drops spent entries that no longer count (for an in-memory ledger; the database keeps
    its rows as history and filters by `window_start`)."""
    start = window_start(now)
    return [e for e in entries if e.kind == RESERVED or e.time > start]


def wallet_reserve_ok(onchain_msat: int, channel_local_msat_total: int, config) -> Tuple[bool, str]:
    """No rebalancing while on-chain plus our channel balances are below the wallet reserve."""
    total = onchain_msat + channel_local_msat_total
    minimum = config.min_wallet_reserve_sats * 1000
    if total < minimum:
        return False, (f"wallet reserve: on-chain {_sat(onchain_msat)} sat + channels "
                       f"{_sat(channel_local_msat_total)} sat = {_sat(total)} sat < minimum "
                       f"{_sat(minimum)} sat")
    return True, f"wallet {_sat(total)} sat >= reserve {_sat(minimum)} sat"
