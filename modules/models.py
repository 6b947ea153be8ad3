"""Plain data passed between the node adapter, the database and the decision code.

Amounts are integer msat, fees integer ppm, times unix seconds; every field says its unit.
"""
import dataclasses
from typing import NamedTuple, Optional

SOURCE = "SOURCE"      # our side drains: more goes out than comes in
SINK = "SINK"          # our side fills: more comes in than goes out
BALANCED = "BALANCED"
IDLE = "IDLE"
FLOW_STATES = (SOURCE, SINK, BALANCED, IDLE)

LOCAL_FAILED = "local_failed"
# WIRE_TEMPORARY_CHANNEL_FAILURE: what Core Lightning's local_failed forward carries when the
# outgoing channel lacks the balance (also a disabled or offline channel: rare, and demand too).
TEMPORARY_CHANNEL_FAILURE = 4103


@dataclasses.dataclass(frozen=True)
class Channel:
    """One channel as listpeerchannels reports it, reduced to what decisions need."""
    short_channel_id: str
    peer_id: str
    state: str
    capacity_msat: int
    local_msat: int              # to_us_msat
    spendable_msat: int
    receivable_msat: int
    fee_base_msat: int
    fee_ppm: int
    opener: str                  # "local" or "remote"
    htlcs_in_use: int
    max_htlcs: int               # the smaller of ours and theirs; max_accepted_htlcs
    peer_connected: bool
    private: bool = False
    # what we advertise for HTLCs leaving through it (updates.local; None: the node did not say)
    htlc_minimum_msat: int = 0
    htlc_maximum_msat: Optional[int] = None
    # the largest htlc_maximum_msat lightningd accepts: capacity less the reserve we keep,
    # or the peer's max in flight if smaller (it clamps anything above to this)
    htlc_max_possible_msat: Optional[int] = None

    @property
    def is_active(self) -> bool:
        return self.state == "CHANNELD_NORMAL"

    @property
    def local_ratio(self) -> float:
        return self.local_msat / self.capacity_msat if self.capacity_msat else 0.0


class Forward(NamedTuple):
    """A forward as listforwards or forward_event reports it (any status).

    A NamedTuple, not a frozen dataclass: hydration builds one per forward, millions of
    them, and a tuple is several times cheaper to make."""
    in_channel: str
    in_htlc_id: Optional[int]
    out_channel: Optional[str]
    in_msat: int
    out_msat: int
    fee_msat: int
    status: str
    received_time: float
    resolved_time: Optional[float]
    created_index: Optional[int]
    updated_index: Optional[int]
    failcode: Optional[int] = None   # local_failed only: why this node refused it

    @property
    def is_settled(self) -> bool:
        return self.status == "settled"

    @property
    def is_unmet_demand(self) -> bool:
        """Refused here for lack of outbound balance: a sale the channel could not make."""
        return (self.status == LOCAL_FAILED and self.failcode == TEMPORARY_CHANNEL_FAILURE
                and bool(self.out_channel))


@dataclasses.dataclass(frozen=True)
class FlowTotals:
    """One channel's forwarding totals since a timestamp, from the database."""
    short_channel_id: str
    in_msat: int = 0
    out_msat: int = 0
    fees_earned_msat: int = 0    # as the outgoing channel
    in_count: int = 0
    out_count: int = 0
    unmet_count: int = 0         # refused here for lack of outbound balance (local_failed 4103)
    unmet_msat: int = 0


@dataclasses.dataclass(frozen=True)
class ChannelFlow:
    """The flow analysis result for one channel (smoothed across cycles)."""
    short_channel_id: str
    in_msat: int
    out_msat: int
    fees_earned_msat: int
    in_count: int
    out_count: int
    flow_ratio: float            # (out - in) / (out + in), smoothed
    daily_volume_msat: int       # (in + out) / window days, smoothed
    daily_out_msat: int          # out / window days, smoothed
    state: str                   # SOURCE, SINK, BALANCED or IDLE
    updated_at: float
    unmet_count: int = 0         # forwards refused for lack of outbound balance, in the window
    unmet_msat: int = 0


@dataclasses.dataclass(frozen=True)
class RebalanceSpend:
    """Our rebalance jobs into one channel over a window, from the plugin's job ledger."""
    short_channel_id: str
    jobs: int = 0
    moved_msat: int = 0
    fee_paid_msat: int = 0       # what sling's stats said each job paid (running ones: so far)
    running: int = 0
    cost_unknown: int = 0        # jobs whose cost sling's stats could not tell when they ended


@dataclasses.dataclass(frozen=True)
class SlingWindow:
    """sling's own totals for one channel over its stats window (sling-stats <scid> true)."""
    window_days: Optional[int]   # sling's time_window_days (30 by default); None when it says nothing
    rebalances: int = 0
    moved_sats: int = 0
    fee_sats: int = 0            # total_spent_sats: sling rounds it down
    fee_ppm: Optional[int] = None   # feeppm_weighted_avg; None without a success in the window
