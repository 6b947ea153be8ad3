from modules.config import default_config
from modules.database import Database
from modules.flow_analysis import FlowAnalyzer, analyze_channel
from modules.models import BALANCED, IDLE, SINK, SOURCE, Channel, FlowTotals
from test_database import make_forward

DAY = 86400
NOW = 1_700_000_000
CONFIG = default_config(flow_window_days=7, flow_ratio_threshold=0.3, idle_daily_volume_sats=1000,
                        flow_ema_alpha=0.5)


def totals(in_sats, out_sats):
    return FlowTotals("1x1x0", in_msat=in_sats * 1000, out_msat=out_sats * 1000)


def test_states_follow_the_direction_of_the_flow():
    assert analyze_channel("1x1x0", totals(100_000, 900_000), None, CONFIG, NOW).state == SOURCE
    assert analyze_channel("1x1x0", totals(900_000, 100_000), None, CONFIG, NOW).state == SINK
    assert analyze_channel("1x1x0", totals(500_000, 450_000), None, CONFIG, NOW).state == BALANCED
    idle = analyze_channel("1x1x0", totals(1000, 2000), None, CONFIG, NOW)
    assert idle.state == IDLE and idle.daily_volume_msat == 3_000_000 // 7
    empty = analyze_channel("1x1x0", None, None, CONFIG, NOW)
    assert empty.state == IDLE and empty.flow_ratio == 0.0


def test_one_burst_does_not_flip_a_steady_channel():
    steady = analyze_channel("1x1x0", totals(100_000, 900_000), None, CONFIG, NOW)
    for _ in range(5):
        steady = analyze_channel("1x1x0", totals(100_000, 900_000), steady, CONFIG, NOW)
    burst = analyze_channel("1x1x0", totals(1_200_000, 900_000), steady, CONFIG, NOW)
    assert steady.state == SOURCE and burst.state == SOURCE
    assert burst.flow_ratio < steady.flow_ratio


def channel(scid):
    return Channel(scid, "02" + "ab" * 32, "CHANNELD_NORMAL", 10**9, 5 * 10**8, 5 * 10**8, 5 * 10**8,
                   0, 100, "local", 0, 483, True)


def test_analyzer_reads_one_aggregation_persists_and_forgets_closed_channels(tmp_path):
    db = Database(str(tmp_path / "r.db"))
    db.migrate()
    db.store_forwards([make_forward("1x1x0", i, "2x2x0", 10_000_000, 1000, NOW - i * 3600) for i in range(24)])
    analyzer = FlowAnalyzer(db, CONFIG)
    flows = analyzer.analyze([channel("1x1x0"), channel("2x2x0"), channel("3x3x0")], NOW)
    assert flows["2x2x0"].state == SOURCE and flows["1x1x0"].state == SINK and flows["3x3x0"].state == IDLE
    assert flows["2x2x0"].fees_earned_msat == 24_000
    restarted = FlowAnalyzer(db, CONFIG)
    assert restarted.flows == flows
    restarted.analyze([channel("2x2x0")], NOW + 60)
    assert set(FlowAnalyzer(db, CONFIG).flows) == {"2x2x0"}
    assert restarted.counts_by_state()[SOURCE] == 1
