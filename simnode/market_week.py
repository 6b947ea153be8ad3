"""The demo's simulated week: the real plugin (with sling) on a market, and the same market
left alone (its start fees, never changed, no rebalancing) on the same arrivals.

    week = simulated_week(build_market("high", 3, days=7))

Both runs start from the balances the market's pre-history left; everything is counted
from t = 0 (the plugin's start) to the end of the run, in msat.
"""
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from modules.config import build_config

from .market import DAY, HOUR, Market, MarketSim, history_snapshot
from .market_baselines import static_run
from .market_run import PluginRun, option_overrides, run_plugin


@dataclasses.dataclass
class ChannelWeek:
    scid: str
    role: str
    start_fee_ppm: int
    end_fee_ppm: int                 # the plugin's fee in force at the end
    broadcasts: int                  # the plugin's fee broadcasts (setchannel) of this channel
    plugin_earned_msat: int
    rebalance_fee_msat: int          # sling fees paid for jobs into this channel
    alone_earned_msat: int

    @property
    def plugin_net_msat(self) -> int:
        return self.plugin_earned_msat - self.rebalance_fee_msat


@dataclasses.dataclass
class Week:
    market: Market
    plugin: PluginRun
    alone: MarketSim                 # left alone, with its hourly `earnings`
    channels: List[ChannelWeek]
    alone_earned_msat: int
    daily_budget_sats: int           # the plugin's rebalance budget in the run

    @property
    def days(self) -> float:
        return self.market.days

    @property
    def ratio(self) -> float:
        """The plugin's net (fees earned less rebalance fees) over what left alone earned."""
        return self.plugin.net_msat / self.alone_earned_msat if self.alone_earned_msat else float("nan")

    def alone_series(self) -> List[Tuple[float, int]]:
        return list(self.alone.earnings)

    def most_broadcasts_in_a_day(self) -> int:
        return self.plugin.most_broadcasts_in_a_day()

    def most_paid_in_24h_msat(self) -> int:
        return self.plugin.most_paid_in_24h_msat()


def simulated_week(market: Market, overrides: Optional[Dict[str, Any]] = None) -> Week:
    """Both runs of `market` (its length is the run's: build it with days=7 for a week)."""
    plugin = run_plugin(market, sling=True, overrides=overrides)
    start = history_snapshot(market)
    before = list(start.earned_msat)
    alone = static_run(market, [(c.start_fee_ppm, c.start_fee_ppm) for c in market.channels], start,
                       earnings_every_s=HOUR)
    alone_earned = [a - b for a, b in zip(alone.earned_msat, before)]
    paid: Dict[str, int] = {}
    for job in plugin.jobs:
        paid[job.scid] = paid.get(job.scid, 0) + job.fee_msat
    channels = [ChannelWeek(c.scid, c.role, c.start_fee_ppm, plugin.fee_timeline[x][-1][1],
                            len(plugin.broadcasts[x]), plugin.earned_msat[x], paid.get(c.scid, 0),
                            alone_earned[x])
                for x, c in enumerate(market.channels)]
    budget = build_config(option_overrides(overrides or {}), ".").daily_budget_sats
    return Week(market, plugin, alone, channels, sum(alone_earned), budget)
