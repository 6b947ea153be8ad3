"""What the network charges into a peer: the fee prior where a channel's own evidence is thin.

Pure, no RPC, `now` passed in. Gossip (listchannels destination=<peer>) lists every channel
direction into the peer with its fee; the other nodes' fees into the same peer are what
senders compare ours with (CLBOSS starts its fees from them). Our own channels are left
out (that is our fee, not the network's), and so are disabled directions (nobody can route
over them at that fee). The summary is the median fee ppm, robust to the odd node that
charges 0 or 50 000 ppm; under MIN_CHANNELS channels it says too little to be used.

The fee cycle keeps one summary per peer, refreshed at most every REFRESH_SECONDS and at
most MAX_READS_PER_CYCLE reads per cycle (`peers_to_read`): a node with hundreds of peers
learns them over a few cycles instead of making its first cycle wait on all of them.
"""
import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional

MIN_CHANNELS = 3
REFRESH_SECONDS = 6 * 3600
MAX_READS_PER_CYCLE = 50


@dataclasses.dataclass(frozen=True)
class GossipChannel:
    """One channel direction into the peer, as gossip tells it."""
    source: str
    fee_ppm: int
    active: bool


@dataclasses.dataclass(frozen=True)
class NetworkSummary:
    channels: int                      # other nodes' active channels into the peer
    median_fee_ppm: Optional[int]      # None: no such channel
    read_at: float

    @property
    def usable(self) -> bool:
        return usable(self)

    def to_dict(self, now: float) -> Dict[str, Any]:
        return {"channels": self.channels, "median_fee_ppm": self.median_fee_ppm,
                "age_s": int(max(0.0, now - self.read_at)), "used": self.usable}

    def describe(self) -> str:
        return f"network prior: {self.channels} channels into this peer charge median {self.median_fee_ppm} ppm"


def median(values: List[int]) -> int:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid] + 1) // 2


def summarize(entries: Iterable[GossipChannel], our_id: Optional[str], read_at: float) -> NetworkSummary:
    fees = [e.fee_ppm for e in entries if e.active and e.source != our_id]
    return NetworkSummary(len(fees), median(fees) if fees else None, read_at)


def usable(summary: Optional[NetworkSummary]) -> bool:
    """Enough channels for their median to stand for what the network charges."""
    return summary is not None and summary.median_fee_ppm is not None and summary.channels >= MIN_CHANNELS


def peers_to_read(peer_ids: Iterable[str], cache: Mapping[str, NetworkSummary], now: float,
                  limit: int = MAX_READS_PER_CYCLE) -> List[str]:
    """The peers whose summary is missing or older than REFRESH_SECONDS, never read first,
    then the oldest; at most `limit`."""
    due = []
    for peer in dict.fromkeys(peer_ids):    # once each, in the order given
        known = cache.get(peer)
        if known is None:
            due.append((0, 0.0, peer))
        elif now - known.read_at >= REFRESH_SECONDS:
            due.append((1, known.read_at, peer))
    due.sort(key=lambda d: (d[0], d[1]))    # stable: ties keep the order given
    return [peer for _, _, peer in due[:limit]]
