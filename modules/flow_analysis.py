"""Flow analysis (spec feature 20): each channel's direction and volume, from SQL only.

One grouped aggregation per cycle covers every channel; the analyzer never calls
listforwards and never loops over forwards in Python. Results are smoothed across
cycles (EMA) so a single burst does not flip a channel's state, and persisted so a
restart does not forget them.
"""
from typing import Dict, Iterable, Optional

from modules.config import Config
from modules.database import Database
from modules.models import BALANCED, IDLE, SINK, SOURCE, Channel, ChannelFlow, FlowTotals

DAY_SECONDS = 86400


def classify(flow_ratio: float, daily_volume_msat: int, config: Config) -> str:
    if daily_volume_msat < config.idle_daily_volume_sats * 1000:
        return IDLE
    if flow_ratio > config.flow_ratio_threshold:
        return SOURCE
    if flow_ratio < -config.flow_ratio_threshold:
        return SINK
    return BALANCED


def analyze_channel(scid: str, totals: Optional[FlowTotals], previous: Optional[ChannelFlow],
                    config: Config, now: float) -> ChannelFlow:
    """Pure: this cycle's totals, blended with the previous result."""
    totals = totals or FlowTotals(scid)
    moved = totals.in_msat + totals.out_msat
    ratio = (totals.out_msat - totals.in_msat) / moved if moved else 0.0
    days = config.flow_window_days
    volume = moved / days
    out_volume = totals.out_msat / days
    if previous is not None:
        alpha = config.flow_ema_alpha
        ratio = alpha * ratio + (1 - alpha) * previous.flow_ratio
        volume = alpha * volume + (1 - alpha) * previous.daily_volume_msat
        out_volume = alpha * out_volume + (1 - alpha) * previous.daily_out_msat
    return ChannelFlow(
        short_channel_id=scid, in_msat=totals.in_msat, out_msat=totals.out_msat,
        fees_earned_msat=totals.fees_earned_msat, in_count=totals.in_count,
        out_count=totals.out_count, flow_ratio=round(ratio, 6),
        daily_volume_msat=int(volume), daily_out_msat=int(out_volume),
        state=classify(ratio, int(volume), config), updated_at=now,
        unmet_count=totals.unmet_count, unmet_msat=totals.unmet_msat)


class FlowAnalyzer:
    def __init__(self, db: Database, config: Config):
        self.db = db
        self.config = config
        self.flows: Dict[str, ChannelFlow] = db.load_flow_results()

    def analyze(self, channels: Iterable[Channel], now: float) -> Dict[str, ChannelFlow]:
        """One cycle over the given open channels; forgets channels no longer open."""
        totals = self.db.get_flow_aggregation(now - self.config.flow_window_days * DAY_SECONDS)
        flows = {c.short_channel_id: analyze_channel(c.short_channel_id, totals.get(c.short_channel_id),
                                                     self.flows.get(c.short_channel_id), self.config, now)
                 for c in channels}
        gone = set(self.flows) - set(flows)
        self.db.save_flow_results(flows.values())
        if gone:
            self.db.delete_flow_results(gone)
        self.flows = flows
        return flows

    def counts_by_state(self) -> Dict[str, int]:
        counts = {state: 0 for state in (SOURCE, SINK, BALANCED, IDLE)}
        for flow in self.flows.values():
            counts[flow.state] += 1
        return counts
