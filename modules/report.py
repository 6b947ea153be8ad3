"""revenue-report: what each channel, each peer and the node earned and spent over a window.

Pure: figures from the flow rollups, the plugin's job ledger, the channel list and, where
given, sling's own stats; no RPC, no SQL, `now` passed in.

* earned: fees of the forwards that left through the channel; volume out and in;
* rebalance spend: our jobs into the channel that ended in the window or still run
  (running ones: what they paid so far), with sling's per-job figures as the job ledger
  recorded them;
* net = earned - rebalance spend; earned ppm (fees over volume out) against rebalance ppm
  (fees over amount moved in): a channel refilled in the window whose refills cost more
  per sat than its forwards earned is flagged;
* unmet: forwards refused here for lack of outbound balance (local_failed 4103).

A peer's figures are the sums over its channels; a channel no longer listed by the node
(closed and forgotten) keeps its row, with its peer unknown, and counts in the totals but
in no peer's. Every amount is given in msat (exact) and in sats (rounded toward zero).
"""
import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from modules.errors import UserError
from modules.models import Channel, FlowTotals, RebalanceSpend, SlingWindow

DAY_SECONDS = 86400
HOUR_SECONDS = 3600
DEFAULT_DAYS = 30
MAX_DAYS = 3650
VIEWS = ("all", "top", "bottom")
DEFAULT_COUNT = 10
MAX_COUNT = 10000

CHANNEL, PEER = "channel", "peer"
Target = Tuple[str, str]   # (CHANNEL, scid) or (PEER, node id)


@dataclasses.dataclass(frozen=True)
class Ledger:
    """Raw sums, added up for peers and the node before any ratio is taken."""
    earned_msat: int = 0
    out_msat: int = 0
    in_msat: int = 0
    forwards_out: int = 0
    forwards_in: int = 0
    unmet_count: int = 0
    unmet_msat: int = 0
    rebalance_jobs: int = 0
    rebalance_jobs_running: int = 0
    rebalance_jobs_cost_unknown: int = 0
    rebalance_moved_msat: int = 0
    rebalance_fee_msat: int = 0

    @classmethod
    def of(cls, flow: Optional[FlowTotals], spend: Optional[RebalanceSpend]) -> "Ledger":
        flow = flow or FlowTotals("")
        spend = spend or RebalanceSpend("")
        return cls(flow.fees_earned_msat, flow.out_msat, flow.in_msat, flow.out_count, flow.in_count,
                   flow.unmet_count, flow.unmet_msat, spend.jobs, spend.running, spend.cost_unknown,
                   spend.moved_msat, spend.fee_paid_msat)

    def __add__(self, other: "Ledger") -> "Ledger":
        return Ledger(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @property
    def net_msat(self) -> int:
        return self.earned_msat - self.rebalance_fee_msat

    @property
    def refill_costs_more_than_it_earns(self) -> bool:
        """Refilled in the window, at a ppm above what its forwards earned per sat out."""
        if self.rebalance_moved_msat <= 0:
            return False
        if self.out_msat <= 0:
            return self.rebalance_fee_msat > 0
        return self.rebalance_fee_msat * self.out_msat > self.earned_msat * self.rebalance_moved_msat


def sats(msat: int) -> int:
    """msat to whole sats, rounded toward zero (a net loss of 1.5 sat reads -1)."""
    return msat // 1000 if msat >= 0 else -(-msat // 1000)


def ppm(part_msat: int, whole_msat: int) -> Optional[int]:
    return part_msat * 1_000_000 // whole_msat if whole_msat > 0 else None


def figures(ledger: Ledger) -> Dict[str, Any]:
    """A ledger as the report shows it."""
    return {
        "net_msat": ledger.net_msat, "net_sats": sats(ledger.net_msat),
        "earned_msat": ledger.earned_msat, "earned_sats": sats(ledger.earned_msat),
        "earned_ppm": ppm(ledger.earned_msat, ledger.out_msat),
        "out_msat": ledger.out_msat, "out_sats": sats(ledger.out_msat),
        "in_msat": ledger.in_msat, "in_sats": sats(ledger.in_msat),
        "forwards_out": ledger.forwards_out, "forwards_in": ledger.forwards_in,
        "rebalance_fee_msat": ledger.rebalance_fee_msat, "rebalance_fee_sats": sats(ledger.rebalance_fee_msat),
        "rebalance_moved_msat": ledger.rebalance_moved_msat,
        "rebalance_moved_sats": sats(ledger.rebalance_moved_msat),
        "rebalance_ppm": ppm(ledger.rebalance_fee_msat, ledger.rebalance_moved_msat),
        "rebalance_jobs": ledger.rebalance_jobs, "rebalance_jobs_running": ledger.rebalance_jobs_running,
        "rebalance_jobs_cost_unknown": ledger.rebalance_jobs_cost_unknown,
        "refill_costs_more_than_it_earns": ledger.refill_costs_more_than_it_earns,
        "unmet_count": ledger.unmet_count, "unmet_msat": ledger.unmet_msat,
        "unmet_sats": sats(ledger.unmet_msat),
    }


def window_since(now: float, days: int) -> Optional[float]:
    """The window's start: the hour that holds `now - days` (the rollups are hourly); None
    for days 0, the whole history."""
    if days == 0:
        return None
    return float((int(now) - days * DAY_SECONDS) // HOUR_SECONDS * HOUR_SECONDS)


def selected_scids(channels: Sequence[Channel], flows: Dict[str, FlowTotals],
                   spend: Dict[str, RebalanceSpend], target: Optional[Target]) -> List[str]:
    """The channels the report covers: every listed channel and every one with forwards or
    jobs in the window; narrowed to one channel or one peer's. Unknown target: UserError."""
    listed = {c.short_channel_id: c for c in channels}
    known = set(listed) | set(flows) | set(spend)
    if target is None:
        return sorted(known)
    kind, ident = target
    if kind == CHANNEL:
        if ident not in known:
            raise UserError(f"unknown channel {ident}: not among this node's channels, and no forward"
                            f" or rebalance of it is recorded in the window")
        return [ident]
    scids = sorted(s for s, c in listed.items() if c.peer_id == ident)
    if not scids:
        raise UserError(f"unknown peer {ident}: no channel to it among this node's channels")
    return scids


def build_report(flows: Dict[str, FlowTotals], spend: Dict[str, RebalanceSpend],
                 channels: Sequence[Channel], days: int, now: float, target: Optional[Target] = None,
                 view: str = "all", count: int = DEFAULT_COUNT,
                 sling: Optional[Dict[str, SlingWindow]] = None, notes: Iterable[str] = ()) -> Dict[str, Any]:
    """The report. Channels and peers sorted by net, best first; view "top" keeps the `count`
    best, "bottom" the `count` worst, worst first. Totals always cover every selected channel."""
    listed = {c.short_channel_id: c for c in channels}
    scids = selected_scids(channels, flows, spend, target)
    sling = sling or {}
    ledgers = {scid: Ledger.of(flows.get(scid), spend.get(scid)) for scid in scids}

    rows = []
    for scid in scids:
        channel = listed.get(scid)
        row = {"short_channel_id": scid, "peer_id": channel.peer_id if channel else None,
               "state": channel.state if channel else None}
        row.update(figures(ledgers[scid]))
        if scid in sling:
            row["sling"] = sling_view(sling[scid])
        rows.append(row)

    by_peer: Dict[str, List[str]] = {}
    for scid in scids:
        if scid in listed:
            by_peer.setdefault(listed[scid].peer_id, []).append(scid)
    peers = []
    for peer_id, peer_scids in by_peer.items():
        total = sum((ledgers[s] for s in peer_scids), Ledger())
        peer = {"peer_id": peer_id, "channels": sorted(peer_scids, key=lambda s: _rank(ledgers[s], s))}
        peer.update(figures(total))
        peers.append((total, peer_id, peer))

    rows.sort(key=lambda r: _rank(ledgers[r["short_channel_id"]], r["short_channel_id"]))
    peers.sort(key=lambda p: _rank(p[0], p[1]))
    totals = sum(ledgers.values(), Ledger())
    since = window_since(now, days)
    return {
        "days": days,
        "since": None if since is None else int(since),
        "until": int(now),
        "id": None if target is None else target[1],
        "view": view,
        "count": count if view != "all" else None,
        "totals": figures(totals),
        "channels_total": len(rows),
        "peers_total": len(peers),
        "peers": _cut([p for _, _, p in peers], view, count),
        "channels": _cut(rows, view, count),
        "notes": list(notes) + _notes(totals, ledgers, listed),
    }


def sling_view(window: SlingWindow) -> Dict[str, Any]:
    """sling's own figures for the channel: all its rebalances over its stats window, in sats
    as sling gives them (its fee is rounded down)."""
    return {"window_days": window.window_days, "rebalances": window.rebalances,
            "moved_sats": window.moved_sats, "fee_sats": window.fee_sats, "fee_ppm": window.fee_ppm}


def _rank(ledger: Ledger, name: str) -> tuple:
    return (-ledger.net_msat, -ledger.earned_msat, name)


def _cut(items: List[Dict[str, Any]], view: str, count: int) -> List[Dict[str, Any]]:
    if view == "top":
        return items[:count]
    if view == "bottom":
        return items[::-1][:count]
    return items


def _notes(totals: Ledger, ledgers: Dict[str, Ledger], listed: Dict[str, Channel]) -> List[str]:
    notes = []
    if totals.rebalance_jobs_cost_unknown:
        notes.append(f"{totals.rebalance_jobs_cost_unknown} rebalance jobs ended while sling's stats could"
                     " not be read: their fee is what was last seen (the budget charged each its whole"
                     " reservation); see rebalance_jobs_cost_unknown per channel")
    if totals.rebalance_jobs_running:
        notes.append(f"{totals.rebalance_jobs_running} rebalance jobs still run: counted with what they"
                     " paid so far")
    gone = sum(1 for scid in ledgers if scid not in listed)
    if gone:
        notes.append(f"{gone} channels are no longer listed by the node (closed): shown by scid with"
                     " peer_id null, counted in the totals, in no peer's")
    return notes
