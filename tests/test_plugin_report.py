"""revenue-report end to end: the real plugin on the simulated node, forwards settled and
refused for lack of balance, sling jobs that finished with known fees, then the report."""
import json
import sqlite3
import time

import pytest

from plugin_harness import db_path, node_rpc, start_plugin, wait_for_phase
from simnode import SimNode
from test_plugin_database import set_faults, start_with_faults
from test_plugin_errors import assert_plain, raw_error

NOW = time.time()
DAY = 86400
P1 = "02" + "a1" * 32
OPTIONS = {"revenue-ops-rebalance-watch-interval-seconds": 2, "revenue-ops-daily-budget-sats": 5000,
           "revenue-ops-rebalance-chunk-sats": 100_000}


def fwd(node, src, dst, out_msat, fee_msat, age_seconds, status="settled", failcode=None):
    t = NOW - age_seconds
    node.add_forward(src, dst, out_msat=out_msat, fee_msat=fee_msat, status=status, failcode=failcode,
                     received_time=t - 1, resolved_time=None if status != "settled" else t)


def build(node):
    """D (to P1) sells at 800 ppm; D2 (also to P1) is idle; F sold cheap (10 ppm) and gets a
    refill at 100 ppm; S1, S2 are full sources; C forwarded and closed before the plugin came."""
    ids = {"S1": node.add_channel(capacity_sats=10_000_000, local_sats=9_000_000, fee_ppm=50),
           "S2": node.add_channel(capacity_sats=10_000_000, local_sats=9_000_000, fee_ppm=50),
           "D": node.add_channel(capacity_sats=10_000_000, local_sats=1_000_000, fee_ppm=800, peer_id=P1),
           "D2": node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=800, peer_id=P1),
           "F": node.add_channel(capacity_sats=10_000_000, local_sats=1_000_000, fee_ppm=500),
           "C": node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000, fee_ppm=300)}
    for i in range(20):   # D: 20 x 100 000 sat out at 800 ppm, 2 to 5 days ago
        fwd(node, ids["S1"], ids["D"], 100_000_000, 80_000, 5 * DAY - i * 3 * 3600)
    fwd(node, ids["D"], ids["S1"], 50_000_000, 500, 3 * DAY)                 # into D once
    fwd(node, ids["S1"], ids["D"], 5_000_000, 7_000, 40 * DAY)               # older than 30 days
    fwd(node, ids["S2"], ids["D"], 3_000_000, 9_000, 400 * DAY)              # older than a year
    for amount, age in ((30_000_000, DAY), (20_000_000, 2 * DAY), (10_000_000, 3 * DAY)):
        fwd(node, ids["S1"], ids["D"], amount, 0, age, status="local_failed")   # 4103: no balance
    fwd(node, ids["S1"], ids["D"], 40_000_000, 0, 41 * DAY, status="local_failed")
    fwd(node, ids["S1"], ids["D"], 90_000_000, 0, DAY, status="local_failed", failcode=4107)  # not liquidity
    for i in range(20):   # F: 20 x 100 000 sat at 10 ppm in the last two days
        fwd(node, ids["S2"], ids["F"], 100_000_000, 1_000, 2 * DAY - i * 3600)
    fwd(node, ids["S2"], ids["C"], 1_000_000_000, 300_000, 10 * DAY)
    node.close_channel(ids["C"])
    node.funds_onchain_msat = 50_000_000_000
    node.set_plugin_loaded("sling", True)
    node.sling.effective_ppm = 100
    return ids


def refill(node, plugin, scid, amount_sats):
    """A forced job of `amount_sats` into scid, paid by the simulated sling at 100 ppm and
    ended by the plugin's job watch; returns what sling's stats say it paid, msat."""
    decision = plugin.call("revenue-rebalance", {"scid": scid, "amount_sats": amount_sats, "force": True})["decision"]
    assert decision["start"] is True and decision["max_ppm"] >= 100, decision
    for _ in range(amount_sats // 100_000 + 2):
        node.sling.step()
    deadline = time.time() + 30
    while plugin.call("revenue-status")["rebalancing"]["active_jobs"]:
        assert time.time() < deadline, "the job watch never ended the job"
        time.sleep(0.1)
    stats = node_rpc(node).call("sling-stats", {"scid": scid, "json": True})["successes_in_time_window"]
    paid = sum(r["amount_msat"] * r["fee_ppm"] // 1_000_000 for r in node.sling.successes[scid])
    assert stats["total_amount_sats"] == amount_sats and paid == amount_sats * 1000 * 100 // 1_000_000
    return stats["total_spent_sats"] * 1000      # sling rounds its figure down, within a sat of `paid`


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    with SimNode(str(tmp_path_factory.mktemp("report"))) as node:
        node.ids = build(node)
        plugin = start_plugin(node, **OPTIONS)
        plugin.call("revenue-analyze")
        node.fees = {"D": refill(node, plugin, node.ids["D"], 1_000_000),
                     "F": refill(node, plugin, node.ids["F"], 500_000)}
        yield node, plugin


def rows(report):
    return {row["short_channel_id"]: row for row in report["channels"]}


def test_the_default_report_covers_30_days_with_exact_figures_per_channel(market):
    node, plugin = market
    ids, fees = node.ids, node.fees
    report = plugin.call("revenue-report")
    assert report["days"] == 30 and report["until"] - report["since"] < 30 * DAY + 3600
    d = rows(report)[ids["D"]]
    assert d["peer_id"] == P1 and d["state"] == "CHANNELD_NORMAL"
    assert (d["earned_msat"], d["out_msat"], d["forwards_out"]) == (1_600_000, 2_000_000_000, 20)
    assert d["earned_ppm"] == 800 and d["earned_sats"] == 1600
    assert (d["in_msat"], d["forwards_in"]) == (50_000_500, 1)
    assert (d["unmet_count"], d["unmet_msat"], d["unmet_sats"]) == (3, 60_000_000, 60_000)   # 4103 only
    assert (d["rebalance_jobs"], d["rebalance_moved_msat"], d["rebalance_fee_msat"]) == (1, 10**9, fees["D"])
    assert 99_000 <= fees["D"] <= 100_000 and d["rebalance_ppm"] == fees["D"] // 1000
    assert d["net_msat"] == 1_600_000 - fees["D"] and d["net_sats"] == (1_600_000 - fees["D"]) // 1000
    assert d["refill_costs_more_than_it_earns"] is False                 # ~100 ppm to refill, 800 earned
    assert d["sling"] == {"window_days": 30, "rebalances": 10, "moved_sats": 1_000_000,
                          "fee_sats": fees["D"] // 1000, "fee_ppm": 100}
    f = rows(report)[ids["F"]]
    assert (f["earned_msat"], f["earned_ppm"], f["rebalance_moved_sats"]) == (20_000, 10, 500_000)
    assert f["net_msat"] == 20_000 - fees["F"] < 0
    assert f["refill_costs_more_than_it_earns"] is True                  # ~100 ppm to refill, 10 earned
    s1 = rows(report)[ids["S1"]]
    assert "sling" not in s1 and s1["rebalance_jobs"] == 0 and s1["in_msat"] == 20 * 100_080_000
    c = rows(report)[ids["C"]]        # closed and forgotten by the node: kept, peer unknown
    assert c["peer_id"] is None and c["state"] is None and c["earned_msat"] == 300_000
    # sorted by net, best first; the totals are the sums
    nets = [r["net_msat"] for r in report["channels"]]
    assert nets == sorted(nets, reverse=True) and report["channels"][-1]["short_channel_id"] == ids["F"]
    totals = report["totals"]
    assert totals["earned_msat"] == 1_600_000 + 20_000 + 300_000 + 500     # D, F, C and S1 (the one in via D)
    assert totals["rebalance_fee_msat"] == fees["D"] + fees["F"] and totals["rebalance_jobs"] == 2
    assert totals["net_msat"] == sum(nets) and report["channels_total"] == 6
    assert report["peers_total"] == 4 and ids["C"] not in {s for p in report["peers"] for s in p["channels"]}
    assert any("no longer listed" in note for note in report["notes"])


def test_days_zero_is_the_whole_history_and_a_shorter_window_leaves_older_forwards_out(market):
    node, plugin = market
    d_id = node.ids["D"]
    lifetime = rows(plugin.call("revenue-report", [0]))[d_id]
    assert (lifetime["earned_msat"], lifetime["forwards_out"]) == (1_600_000 + 7_000 + 9_000, 22)
    assert (lifetime["unmet_count"], lifetime["unmet_msat"]) == (4, 100_000_000)
    assert rows(plugin.call("revenue-report", {"days": 3650}))[d_id]["earned_msat"] == 1_616_000
    assert rows(plugin.call("revenue-report", {"days": 365}))[d_id]["earned_msat"] == 1_607_000
    week = rows(plugin.call("revenue-report", {"days": 7}))[d_id]
    assert week["earned_msat"] == 1_600_000 and week["rebalance_fee_msat"] == node.fees["D"]
    day = plugin.call("revenue-report", {"days": 1})
    assert rows(day)[node.ids["F"]]["forwards_out"] < 20 and rows(day)[d_id]["forwards_out"] == 0
    assert day["since"] % 3600 == 0


def test_a_peer_filter_sums_its_channels_and_a_scid_filter_shows_one(market):
    node, plugin = market
    ids = node.ids
    peer = plugin.call("revenue-report", {"id": P1})
    assert [r["short_channel_id"] for r in peer["channels"]] == [ids["D"], ids["D2"]]
    assert [p["peer_id"] for p in peer["peers"]] == [P1] and peer["peers"][0]["channels"] == [ids["D"], ids["D2"]]
    assert peer["totals"]["earned_msat"] == peer["peers"][0]["earned_msat"] == 1_600_000
    assert peer["id"] == P1 and peer["channels_total"] == 2
    upper = plugin.call("revenue-report", {"id": P1.upper()})
    assert upper["totals"] == peer["totals"]
    one = plugin.call("revenue-report", [30, ids["F"]])
    assert [r["short_channel_id"] for r in one["channels"]] == [ids["F"]]
    assert one["totals"]["net_msat"] == one["channels"][0]["net_msat"] < 0
    closed = plugin.call("revenue-report", {"id": ids["C"], "days": 0})
    assert closed["channels"][0]["earned_msat"] == 300_000 and closed["peers"] == []


def test_top_and_bottom_show_the_best_and_the_worst_and_keep_the_totals(market):
    node, plugin = market
    full = plugin.call("revenue-report")
    top = plugin.call("revenue-report", {"view": "top", "count": 2})
    bottom = plugin.call("revenue-report", [30, None, "bottom", 1])
    assert [r["short_channel_id"] for r in top["channels"]] == [r["short_channel_id"] for r in full["channels"][:2]]
    assert top["channels"][0]["short_channel_id"] == node.ids["D"] and len(top["peers"]) == 2
    assert [r["short_channel_id"] for r in bottom["channels"]] == [node.ids["F"]]
    assert top["totals"] == bottom["totals"] == full["totals"]
    assert top["channels_total"] == bottom["channels_total"] == 6
    assert plugin.call("revenue-report", {"view": "top"})["count"] == 10


def test_sling_is_asked_once_per_channel_with_jobs_and_the_report_answers_without_it(market):
    node, plugin = market
    ids = node.ids
    node.clear_calls()
    plugin.call("revenue-report")
    asked = sorted(p["scid"] for p in node.calls_of("sling-stats") if isinstance(p, dict) and p.get("scid"))
    assert asked == sorted([ids["D"], ids["F"]])
    try:
        node.fault("sling-stats", "error", code=-32700, message="stats are broken")
        node.clear_calls()
        broken = plugin.call("revenue-report")
        assert len(node.calls_of("sling-stats")) == 1                     # none after the first failure
        assert not [r for r in broken["channels"] if "sling" in r]
        assert rows(broken)[ids["D"]]["rebalance_fee_msat"] == node.fees["D"]     # ours stand
        assert any("sling's figures are shown for 0 of the 2 channels" in n and "stats are broken" in n
                   for n in broken["notes"])
        node.clear_faults()
        node.set_plugin_loaded("sling", False)
        node.clear_calls()
        missing = plugin.call("revenue-report")
        assert node.calls_of("sling-stats") == [] and not [r for r in missing["channels"] if "sling" in r]
        assert "sling is not loaded: its own figures are not shown beside ours" in missing["notes"]
        assert missing["totals"] == broken["totals"]
    finally:
        node.clear_faults()
        node.set_plugin_loaded("sling", True)
    assert not [m for level, m in plugin.logs if level == "broken"]


def test_the_whole_history_stays_when_old_forwards_and_hourly_rows_are_pruned(tmp_path):
    with SimNode(str(tmp_path)) as node:
        a = node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        b = node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        for age_days in (400, 100, 35, 2):
            fwd(node, a, b, 10_000_000, 1_000 * age_days, age_days * DAY)
        fwd(node, a, b, 10_000_000, 0, 50 * DAY, status="local_failed")
        plugin = start_plugin(node)
        plugin.call("revenue-analyze")              # the flow cycle rolls the closed days
        before = plugin.call("revenue-report", {"days": 0})
        assert rows(before)[b]["earned_msat"] == 537_000 and rows(before)[b]["unmet_count"] == 1
        assert plugin.shutdown() == 0
        today = int(time.time()) // DAY
        with sqlite3.connect(db_path(node)) as conn:      # a retention pruner's work
            conn.execute("DELETE FROM forwards WHERE timestamp < ?", (today * DAY,))
            conn.execute("DELETE FROM failed_forwards")
            conn.execute("DELETE FROM flow_hourly WHERE hour < ?", (today * 24,))
        plugin = start_plugin(node)
        after = plugin.call("revenue-report", {"days": 0})
        assert after["totals"] == before["totals"] and rows(after)[b] == rows(before)[b]


def test_on_read_only_storage_the_report_answers_exactly_from_the_hourly_rollups(tmp_path):
    with SimNode(str(tmp_path)) as node:
        a = node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        b = node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        for age_days in (20, 9, 2):
            fwd(node, a, b, 10_000_000, 1_000 * age_days, age_days * DAY)
        plugin = start_plugin(node)
        plugin.call("revenue-analyze")
        before = plugin.call("revenue-report", {"days": 0})
        assert plugin.shutdown() == 0
        with sqlite3.connect(db_path(node)) as conn:     # a late forward made 9 days ago stale
            conn.execute("INSERT INTO marks VALUES ('daily_stale_from', ?)", (int(NOW - 9 * DAY) // DAY,))
        faults = str(tmp_path / "faults")
        set_faults(faults, "readonly")
        plugin = start_with_faults(node, faults)
        after = plugin.call("revenue-report", {"days": 0})
        assert rows(after)[b]["earned_msat"] == 31_000 and after["totals"] == before["totals"]
        assert any("could not be rolled" in n and "readonly" in n for n in after["notes"]), after["notes"]
        set_faults(faults)
        assert not any("could not be rolled" in n for n in plugin.call("revenue-report")["notes"])


def test_during_hydration_the_report_answers_and_says_the_history_is_incomplete(tmp_path):
    with SimNode(str(tmp_path)) as node:
        a = node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        node.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        node.fault("listforwards", "hang", seconds=3, times=1)
        plugin = start_plugin(node, wait_running=False)
        wait_for_phase(plugin, "hydrating")
        report = plugin.call("revenue-report")
        assert any("still being read" in n for n in report["notes"]) and a in rows(report)
        wait_for_phase(plugin, "running")
        assert not any("still being read" in n for n in plugin.call("revenue-report")["notes"])


BIG = "x" * 100_000
BAD_CALLS = [
    ({"days": -1}, ["days must be between 0 and 3650 (0: the whole history), got -1"]),
    ({"days": 3651}, ["days must be between 0 and 3650"]),
    ({"days": "30"}, ["days must be a whole number from 0 to 3650", "a string '30'"]),
    ({"days": 1.5}, ["days must be a whole number", "a number 1.5"]),
    ({"days": True}, ["days must be a whole number", "a boolean"]),
    ({"days": [30]}, ["days must be a whole number", "an array"]),
    ({"id": 5}, ["id must be a peer id (66 hex characters starting 02 or 03) or a short channel id", "a number"]),
    ({"id": "alice"}, ["malformed id 'alice': id must be a peer id"]),
    ({"id": "04" + "ab" * 32}, ["malformed id"]),
    ({"id": "02" + "ab" * 32 + "\n"}, ["malformed id"]),
    ({"id": "700000x0x0 "}, ["malformed id"]),
    ({"id": "1x2x3"}, ["unknown channel 1x2x3"]),
    ({"id": "03" + "99" * 32}, ["unknown peer 03" + "99" * 32, "no channel to it"]),
    ({"view": "best"}, ["view must be one of all, top, bottom, got 'best'"]),
    ({"view": ["top"]}, ["view must be one of all, top, bottom, got an array"]),
    ({"count": 5}, ["count needs view top or bottom"]),
    ({"view": "all", "count": 5}, ["count needs view top or bottom"]),
    ({"view": "top", "count": 0}, ["count must be between 1 and 10000, got 0"]),
    ({"view": "top", "count": 10001}, ["count must be between 1 and 10000"]),
    ({"view": "bottom", "count": "5"}, ["count must be a whole number from 1 to 10000", "a string"]),
    ({"period": 7}, ["unknown parameter 'period'", "revenue-report takes days, id, view, count"]),
    ([30, None, "top", 5, "more"], ["too many parameters", "at most 4 (days, id, view, count), got 5"]),
    ({"id": BIG}, ["malformed id", "(100002 characters)"]),
    ({"days": 10 ** 4000}, ["days must be between 0 and 3650", "a number of"]),
]


@pytest.mark.parametrize("params,words", BAD_CALLS, ids=[json.dumps(p)[:40] for p, _ in BAD_CALLS])
def test_every_bad_parameter_is_refused_with_its_name_and_no_traceback(market, params, words):
    node, plugin = market
    error = raw_error(plugin, "revenue-report", params)
    assert_plain(error)
    assert error["code"] == -32602 and len(error["message"]) < 300, error
    for word in words:
        assert word in error["message"], error["message"]
    assert plugin.call("revenue-status")["phase"] == "running"
    assert not [m for level, m in plugin.logs if level == "broken"]


def test_an_integer_of_thousands_of_digits_for_days_is_refused(market):
    node, plugin = market
    answer = plugin.call_raw("revenue-report", '{"days": ' + "9" * 5000 + "}")
    assert_plain(answer["error"])
    assert answer["error"]["code"] == -32602 and plugin.alive
