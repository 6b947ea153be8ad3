"""revenue-report's figures (modules/report.py, pure) and its parameter checks.

The plugin-process tests are in test_plugin_report.py; the rollups it reads in
test_daily_rollups.py."""
import pytest

from modules.errors import UserError
from modules.models import Channel, FlowTotals, RebalanceSpend, SlingWindow
from modules.report import Ledger, build_report, sats, selected_scids, window_since
from modules.rpc_params import choice_param, peer_or_scid_param, whole_param

NOW = 1_700_000_000.5
P1, P2 = "02" + "11" * 32, "03" + "22" * 32


def channel(scid, peer=P1, state="CHANNELD_NORMAL"):
    return Channel(scid, peer, state, 10**10, 5 * 10**9, 5 * 10**9, 5 * 10**9, 0, 100, "local", 0, 483, True)


def flow(scid, out_msat=0, fee_msat=0, in_msat=0, out_count=0, in_count=0, unmet_count=0, unmet_msat=0):
    return FlowTotals(scid, in_msat, out_msat, fee_msat, in_count, out_count, unmet_count, unmet_msat)


def spend(scid, moved_msat, fee_msat, jobs=1, running=0, unknown=0):
    return RebalanceSpend(scid, jobs, moved_msat, fee_msat, running, unknown)


def by_scid(report):
    return {row["short_channel_id"]: row for row in report["channels"]}


def test_a_channel_row_gives_earned_volume_spend_net_and_both_ppms_exactly():
    flows = {"1x1x0": flow("1x1x0", out_msat=3_000_000_000, fee_msat=1_500_000, in_msat=20_000_000,
                           out_count=3, in_count=1, unmet_count=2, unmet_msat=7_000_000)}
    jobs = {"1x1x0": spend("1x1x0", moved_msat=1_000_000_000, fee_msat=200_500, jobs=2)}
    row = by_scid(build_report(flows, jobs, [channel("1x1x0")], 30, NOW))["1x1x0"]
    assert row["earned_msat"] == 1_500_000 and row["earned_sats"] == 1500 and row["earned_ppm"] == 500
    assert (row["out_msat"], row["out_sats"], row["in_msat"], row["in_sats"]) == (3_000_000_000, 3_000_000,
                                                                                20_000_000, 20_000)
    assert (row["forwards_out"], row["forwards_in"]) == (3, 1)
    assert row["rebalance_fee_msat"] == 200_500 and row["rebalance_fee_sats"] == 200
    assert row["rebalance_moved_sats"] == 1_000_000 and row["rebalance_ppm"] == 200 and row["rebalance_jobs"] == 2
    assert row["net_msat"] == 1_299_500 and row["net_sats"] == 1299
    assert row["refill_costs_more_than_it_earns"] is False           # 200 ppm to refill, 500 earned
    assert (row["unmet_count"], row["unmet_msat"], row["unmet_sats"]) == (2, 7_000_000, 7000)
    assert row["peer_id"] == P1 and row["state"] == "CHANNELD_NORMAL" and "sling" not in row


def test_a_refill_dearer_than_what_the_forwards_earned_is_flagged():
    def flagged(out_msat, fee_msat, moved_msat, paid_msat):
        report = build_report({"1x1x0": flow("1x1x0", out_msat, fee_msat)},
                              {"1x1x0": spend("1x1x0", moved_msat, paid_msat)}, [channel("1x1x0")], 30, NOW)
        return report["channels"][0]["refill_costs_more_than_it_earns"]
    assert flagged(1_000_000_000, 100_000, 1_000_000_000, 100_001) is True      # 100.001 ppm > 100 ppm
    assert flagged(1_000_000_000, 100_000, 1_000_000_000, 100_000) is False     # the same ppm: not dearer
    assert flagged(0, 0, 1_000_000_000, 1) is True                              # refilled, nothing sold
    assert flagged(0, 0, 1_000_000_000, 0) is False                             # a free refill
    assert flagged(0, 0, 0, 0) is False                                         # jobs that moved nothing
    assert flagged(1_000_000_000, 0, 0, 5000) is False                          # not refilled: nothing to compare


def test_a_net_loss_reads_in_sats_rounded_toward_zero():
    assert [sats(m) for m in (1999, -1999, -1000, 0)] == [1, -1, -1, 0]
    report = build_report({}, {"1x1x0": spend("1x1x0", 10**9, 1500)}, [channel("1x1x0")], 30, NOW)
    assert report["channels"][0]["net_msat"] == -1500 and report["channels"][0]["net_sats"] == -1


def test_a_peer_sums_its_channels_and_its_ppm_comes_from_the_sums():
    flows = {"1x1x0": flow("1x1x0", out_msat=1_000_000_000, fee_msat=1_000_000),     # 1000 ppm
             "2x1x0": flow("2x1x0", out_msat=9_000_000_000, fee_msat=900_000),       # 100 ppm
             "3x1x0": flow("3x1x0", out_msat=1_000_000_000, fee_msat=50_000)}
    report = build_report(flows, {}, [channel("1x1x0"), channel("2x1x0"), channel("3x1x0", P2)], 30, NOW)
    peers = {p["peer_id"]: p for p in report["peers"]}
    assert peers[P1]["channels"] == ["1x1x0", "2x1x0"]           # its channels, best net first
    assert peers[P1]["earned_msat"] == 1_900_000 and peers[P1]["out_msat"] == 10_000_000_000
    assert peers[P1]["earned_ppm"] == 190                        # not the mean of 1000 and 100
    assert [p["peer_id"] for p in report["peers"]] == [P1, P2]   # by net
    assert report["totals"]["earned_msat"] == 1_950_000 and report["peers_total"] == 2


def test_a_channel_the_node_no_longer_lists_keeps_its_row_without_a_peer():
    flows = {"1x1x0": flow("1x1x0", out_msat=10**9, fee_msat=10_000), "9x9x9": flow("9x9x9", out_msat=10**9,
                                                                                  fee_msat=70_000)}
    report = build_report(flows, {"9x9x9": spend("9x9x9", 10**9, 1000)}, [channel("1x1x0")], 30, NOW)
    gone = by_scid(report)["9x9x9"]
    assert gone["peer_id"] is None and gone["state"] is None and gone["net_msat"] == 69_000
    assert report["totals"]["earned_msat"] == 80_000 and report["totals"]["rebalance_fee_msat"] == 1000
    assert [p["peer_id"] for p in report["peers"]] == [P1] and report["peers"][0]["earned_msat"] == 10_000
    assert any("no longer listed" in note for note in report["notes"])


def test_channels_sort_by_net_and_top_and_bottom_cut_the_lists_not_the_totals():
    flows = {f"{i}x1x0": flow(f"{i}x1x0", out_msat=10**9, fee_msat=i * 1000) for i in range(1, 6)}
    jobs = {"5x1x0": spend("5x1x0", 10**9, 10_000)}                          # net 5000 - 10000 < 0
    listed = [channel(s, P1 if i % 2 else P2) for i, s in enumerate(sorted(flows))]
    full = build_report(flows, jobs, listed, 30, NOW)
    assert [r["short_channel_id"] for r in full["channels"]] == ["4x1x0", "3x1x0", "2x1x0", "1x1x0", "5x1x0"]
    top = build_report(flows, jobs, listed, 30, NOW, view="top", count=2)
    assert [r["short_channel_id"] for r in top["channels"]] == ["4x1x0", "3x1x0"]
    bottom = build_report(flows, jobs, listed, 30, NOW, view="bottom", count=2)
    assert [r["short_channel_id"] for r in bottom["channels"]] == ["5x1x0", "1x1x0"]   # worst first
    assert len(top["peers"]) == len(bottom["peers"]) == 2 and bottom["peers"][0]["net_msat"] < 0
    assert top["totals"] == bottom["totals"] == full["totals"]
    assert top["channels_total"] == 5 and top["count"] == 2 and full["count"] is None


def test_selection_by_channel_and_by_peer_and_unknown_ones_refused():
    listed = [channel("1x1x0"), channel("2x1x0"), channel("3x1x0", P2)]
    flows = {"7x7x7": flow("7x7x7", out_msat=1)}           # closed, still in the records
    assert selected_scids(listed, flows, {}, None) == ["1x1x0", "2x1x0", "3x1x0", "7x7x7"]
    assert selected_scids(listed, flows, {}, ("peer", P1)) == ["1x1x0", "2x1x0"]
    assert selected_scids(listed, flows, {}, ("channel", "7x7x7")) == ["7x7x7"]
    with pytest.raises(UserError, match="unknown channel 8x8x8") as err:
        selected_scids(listed, flows, {}, ("channel", "8x8x8"))
    assert err.value.code == -32602
    with pytest.raises(UserError, match="unknown peer 03"):
        selected_scids(listed, flows, {}, ("peer", "03" + "99" * 32))
    report = build_report(flows, {}, listed, 30, NOW, target=("peer", P1))
    assert [r["short_channel_id"] for r in report["channels"]] == ["1x1x0", "2x1x0"]
    assert report["id"] == P1 and [p["peer_id"] for p in report["peers"]] == [P1]


def test_the_window_starts_on_the_hour_and_zero_days_means_the_whole_history():
    assert window_since(NOW, 0) is None
    since = window_since(NOW, 30)
    assert since % 3600 == 0 and NOW - 30 * 86400 - 3600 < since <= NOW - 30 * 86400
    report = build_report({}, {}, [], 7, NOW)
    assert report["days"] == 7 and report["since"] == int(window_since(NOW, 7)) and report["until"] == int(NOW)
    assert build_report({}, {}, [], 0, NOW)["since"] is None


def test_sling_figures_show_beside_ours_where_given_and_notes_say_what_is_uncertain():
    jobs = {"1x1x0": spend("1x1x0", 10**9, 100_000, jobs=3, running=1, unknown=1)}
    window = SlingWindow(window_days=30, rebalances=12, moved_sats=1_200_000, fee_sats=119, fee_ppm=99)
    report = build_report({}, jobs, [channel("1x1x0"), channel("2x1x0")], 30, NOW,
                          sling={"1x1x0": window}, notes=["from the caller"])
    rows = by_scid(report)
    assert rows["1x1x0"]["sling"] == {"window_days": 30, "rebalances": 12, "moved_sats": 1_200_000,
                                      "fee_sats": 119, "fee_ppm": 99}
    assert "sling" not in rows["2x1x0"]
    assert rows["1x1x0"]["rebalance_jobs_cost_unknown"] == 1 and rows["1x1x0"]["rebalance_jobs_running"] == 1
    assert report["notes"][0] == "from the caller"
    assert any("could not be read" in n for n in report["notes"]) and any("still run" in n for n in report["notes"])


def test_ledgers_add_field_by_field():
    a = Ledger.of(flow("x", out_msat=5, fee_msat=1, unmet_count=1), spend("x", 7, 2, running=1))
    b = Ledger.of(None, spend("y", 3, 1, unknown=1))
    total = a + b
    assert (total.out_msat, total.earned_msat, total.rebalance_moved_msat, total.rebalance_fee_msat) == (5, 1, 10, 3)
    assert (total.rebalance_jobs, total.rebalance_jobs_running, total.rebalance_jobs_cost_unknown) == (2, 1, 1)
    assert total.net_msat == -2 and total.unmet_count == 1


# --- parameters --------------------------------------------------------------------------

def test_days_and_count_are_whole_numbers_in_range():
    assert whole_param(None, "days", 0, 3650, 30) == 30 and whole_param(0, "days", 0, 3650, 30) == 0
    assert whole_param(3650, "days", 0, 3650, 30) == 3650
    with pytest.raises(UserError, match=r"days must be between 0 and 3650 \(0: the whole history\), got 3651"):
        whole_param(3651, "days", 0, 3650, 30, "0: the whole history")
    with pytest.raises(UserError, match="days must be a whole number from 0 to 3650, got a string '7'"):
        whole_param("7", "days", 0, 3650, 30)
    for bad, kind in ((1.5, "a number"), (True, "a boolean"), ([7], "an array"), ({}, "an object")):
        with pytest.raises(UserError, match=f"count must be a whole number from 1 to 10, got {kind}"):
            whole_param(bad, "count", 1, 10, None)


def test_view_is_one_of_its_words():
    assert choice_param(None, "view", ("all", "top", "bottom"), "all") == "all"
    assert choice_param("bottom", "view", ("all", "top", "bottom"), "all") == "bottom"
    with pytest.raises(UserError, match="view must be one of all, top, bottom, got 'TOP'"):
        choice_param("TOP", "view", ("all", "top", "bottom"), "all")
    with pytest.raises(UserError, match="view must be one of all, top, bottom, got a number 1"):
        choice_param(1, "view", ("all", "top", "bottom"), "all")


@pytest.mark.parametrize("value,expected", [
    ("103x1x0", ("channel", "103x1x0")),
    ("02" + "ab" * 32, ("peer", "02" + "ab" * 32)),
    ("03" + "AB" * 32, ("peer", "03" + "ab" * 32)),      # CLN prints lowercase: matched as such
    (None, None),
])
def test_id_is_a_peer_id_or_a_short_channel_id(value, expected):
    assert peer_or_scid_param(value) == expected


@pytest.mark.parametrize("value", ["04" + "ab" * 32, "02" + "ab" * 31, "02" + "ab" * 32 + "0", "02" + "zz" * 32,
                                   "02" + "ab" * 32 + "\n", " 103x1x0", "103x1x0\n", "103x1", "",
                                   "02" + "\u0661" * 64])
def test_anything_else_is_not_an_id(value):
    with pytest.raises(UserError, match="malformed id .*: id must be a peer id .* or a short channel id") as err:
        peer_or_scid_param(value)
    assert err.value.code == -32602


def test_an_id_of_another_type_says_which():
    with pytest.raises(UserError, match="id must be a peer id .*, got a number$"):
        peer_or_scid_param(103)
