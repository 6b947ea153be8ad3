"""The real plugin process inside the simulated node: start-up, hydration, live events, status."""
import time

import pytest

from plugin_harness import (node_rpc, settled_in_node, start_plugin, stored_forward_keys,
                            wait_for_phase)
from simnode import SimNode, SimRpcError

NOW = time.time()


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        for _ in range(4):
            sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        yield sim


def listforwards_pages(node, index):
    return [p for p in node.calls_of("listforwards") if isinstance(p, dict) and p.get("index") == index]


def test_startup_deletes_orphan_sling_jobs_and_says_so(node):
    node.set_plugin_loaded("sling", True)
    rpc = node_rpc(node)
    scids = [c["short_channel_id"] for c in rpc.listpeerchannels()["channels"]]
    for scid in scids[:3]:
        rpc.call("sling-job", {"scid": scid, "direction": "pull", "amount": 100000,
                               "maxppm": 300, "outppm": 0})
    assert len(rpc.call("sling-jobsettings")) == 3
    plugin = start_plugin(node)
    plugin.wait_for_log(r"^Startup Hygiene: Terminated 3 orphan sling jobs\.$")
    assert rpc.call("sling-jobsettings") == {}
    status = plugin.call("revenue-status")
    assert status["startup_hygiene"]["orphans_deleted"] == 3
    assert {k: status["sling"][k] for k in ("loaded", "jobs", "rebalancing")} == \
        {"loaded": True, "jobs": 0, "rebalancing": "enabled"}


def test_without_sling_rebalancing_is_disabled_and_the_rest_runs(node):
    node.set_plugin_loaded("sling", False)
    plugin = start_plugin(node)
    plugin.wait_for_log("sling plugin not loaded: rebalancing is disabled")
    status = plugin.call("revenue-status")
    assert status["sling"]["loaded"] is False
    assert status["sling"]["rebalancing"].startswith("disabled")
    assert status["phase"] == "running"
    assert set(status["loops"]) == {"flow", "fee", "rebalance", "jobs"}


def test_hydration_pages_listforwards_and_resumes_from_its_mark(node):
    node.generate_history(2500, start_time=NOW - 5 * 86400, end_time=NOW - 3600, seed=3)
    plugin = start_plugin(node, **{"revenue-ops-hydration-page-size": 1000})
    pages = listforwards_pages(node, "created")
    # hydration's pages, then the first flow cycle's catch-up from the mark
    assert [p["start"] for p in pages] == [1, 1001, 2001] + [2501] * (len(pages) - 3)
    assert all(p["limit"] == 1000 for p in pages)
    expected = settled_in_node(node)
    assert set(stored_forward_keys(node)) == expected
    status = plugin.call("revenue-status")
    assert status["database"]["forwards_rows"] == len(expected)
    assert status["database"]["high_water_mark"]["created_index"] == 2500
    assert status["database"]["hydration"]["rows_added"] == len(expected)
    assert status["database"]["hydration"]["pages"] >= 3
    assert plugin.shutdown() == 0

    channels = [c["short_channel_id"] for c in node_rpc(node).listpeerchannels()["channels"]]
    for _ in range(5):
        node.add_forward(channels[0], channels[1], out_msat=50_000_000, fee_msat=5_000)
    seen = len(listforwards_pages(node, "created"))
    plugin = start_plugin(node, **{"revenue-ops-hydration-page-size": 1000})
    starts = [p["start"] for p in listforwards_pages(node, "created")[seen:]]
    assert starts[0] == 2501 and set(starts[1:]) <= {2506}   # then the flow cycle's catch-up
    assert plugin.call("revenue-status")["database"]["hydration"]["rows_added"] == 5
    assert set(stored_forward_keys(node)) == settled_in_node(node)


def test_killed_mid_hydration_then_restarted_stores_every_forward_once(node):
    node.generate_history(60_000, start_time=NOW - 30 * 86400, end_time=NOW - 60, seed=5)
    plugin = start_plugin(node, wait_running=False, **{"revenue-ops-hydration-page-size": 500})
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if len(stored_forward_keys(node)) > 2000:
                break
        except Exception:
            pass  # the database may not exist yet
        time.sleep(0.01)
    plugin.kill()
    partial = len(stored_forward_keys(node))
    expected = settled_in_node(node)
    assert 0 < partial < len(expected), "the kill should land mid-hydration"
    plugin = start_plugin(node, **{"revenue-ops-hydration-page-size": 500})
    keys = stored_forward_keys(node)
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert plugin.call("revenue-status")["database"]["hydration"]["rows_added"] == len(expected) - partial


def test_a_forward_in_flight_during_hydration_and_settled_while_down_is_stored(node):
    node.generate_history(300, start_time=NOW - 86400, end_time=NOW - 600, seed=8)
    channels = [c["short_channel_id"] for c in node_rpc(node).listpeerchannels()["channels"]]
    in_flight = node.add_forward(channels[2], channels[3], out_msat=7_000_000, fee_msat=700,
                                 status="offered")
    node.generate_history(300, start_time=NOW - 500, end_time=NOW - 100, seed=9)  # newer forwards after it
    plugin = start_plugin(node, **{"revenue-ops-hydration-page-size": 100})
    assert len(stored_forward_keys(node)) == len(settled_in_node(node))
    offered = node_rpc(node).call("listforwards", {"index": "created", "start": in_flight, "limit": 1})
    in_flight_key = (offered["forwards"][0]["in_channel"], offered["forwards"][0]["in_htlc_id"])
    assert in_flight_key not in set(stored_forward_keys(node))
    assert plugin.shutdown() == 0
    node.settle_forward(in_flight)                    # while the plugin is down
    start_plugin(node, **{"revenue-ops-hydration-page-size": 100})
    assert in_flight_key in set(stored_forward_keys(node))
    assert set(stored_forward_keys(node)) == settled_in_node(node)


def test_live_forward_events_are_stored_once(node):
    plugin = start_plugin(node)
    channels = [c["short_channel_id"] for c in node_rpc(node).listpeerchannels()["channels"]]
    created = node.add_forward(channels[0], channels[1], out_msat=3_000_000, fee_msat=300,
                               status="offered")
    node.emit_forward(plugin, created)               # offered: nothing to store yet
    node.settle_forward(created)
    node.emit_forward(plugin, created)               # settled: stored
    deadline = time.time() + 10
    while time.time() < deadline and plugin.call("revenue-status")["database"]["forwards_rows"] < 1:
        time.sleep(0.05)
    assert plugin.call("revenue-status")["database"]["forwards_rows"] == 1
    node.emit_forward(plugin, created)               # a repeat changes nothing
    plugin.call("revenue-analyze")                   # and the catch-up page finds it again
    assert plugin.call("revenue-status")["database"]["forwards_rows"] == 1
    assert len(stored_forward_keys(node)) == 1


def test_status_reports_every_part(node):
    node.generate_history(500, start_time=NOW - 86400, end_time=NOW - 60, seed=2)
    started = time.time()
    plugin = start_plugin(node, **{"revenue-ops-dry-run": True})
    status = plugin.call("revenue-status")
    answered = time.time()
    assert status["version"] and status["dry_run"] is True and status["uptime_seconds"] >= 0
    for loop in status["loops"].values():
        assert {"runs", "errors", "last_start", "last_duration_seconds", "last_error", "next_run"} <= set(loop)
        # scheduled after the loop's last start, unless it is due right now (then it may be
        # read in the instant between being due and starting)
        due_now = loop["next_run"] <= answered
        assert loop["next_run"] >= started and (due_now or loop["next_run"] > (loop["last_start"] or 0))
    db = status["database"]
    assert db["path"].endswith("revenue_ops.db") and db["file_size_bytes"] > 0
    assert db["forwards_rows"] == len(settled_in_node(node))
    assert status["channels"]["count"] == 4
    assert status["startup_hygiene"]["sling_loaded"] in (True, False)


@pytest.mark.parametrize("option,value,message", [
    ("revenue-ops-flow-window-days", 0, "revenue-ops-flow-window-days: 0 is out of range; expected int from 1 to 365"),
    ("revenue-ops-demand-half-life-hours", "lots", "revenue-ops-demand-half-life-hours: 'lots' is not valid"),
    ("revenue-ops-min-fee-ppm", 9000, "must not exceed revenue-ops-max-fee-ppm"),
])
def test_invalid_options_make_the_plugin_step_aside_with_a_clear_message(node, option, value, message):
    plugin = start_plugin(node, **{option: value})
    assert plugin.disabled is not None and message in plugin.disabled
    assert node_rpc(node).getinfo()["id"]          # the node runs on


def test_shutdown_stops_the_loops_and_the_process(node):
    plugin = start_plugin(node)
    began = time.time()
    assert plugin.shutdown() == 0
    assert time.time() - began < 10
    assert any("cl-revenue-ops stopped" in m for _, m in plugin.logs)


def test_a_failing_rpc_is_counted_and_the_loop_lives_on(node):
    plugin = start_plugin(node)
    node.fault("listpeerchannels", "error", code=-1, message="boom")
    with pytest.raises(SimRpcError, match="boom"):
        plugin.call("revenue-analyze")
    node.clear_faults()
    plugin.call("revenue-analyze")
    flow = plugin.call("revenue-status")["loops"]["flow"]
    assert flow["errors"] == 1 and flow["last_error"] is None and flow["runs"] >= 2


def test_a_hanging_rpc_times_out_instead_of_freezing_the_plugin(node):
    plugin = start_plugin(node, **{"revenue-ops-rpc-timeout-seconds": 1})
    node.fault("listpeerchannels", "hang", seconds=5)
    with pytest.raises(SimRpcError, match="no answer within 1 s"):
        plugin.call("revenue-analyze")
    assert plugin.call("revenue-status")["phase"] == "running"


def test_a_node_without_pagination_is_read_in_one_call_and_says_so(node):
    node.generate_history(400, start_time=NOW - 86400, end_time=NOW - 60, seed=4)
    node.fault("listforwards", "old_shapes")
    plugin = start_plugin(node)
    plugin.wait_for_log("pagination is not supported by this node")
    assert set(stored_forward_keys(node)) == settled_in_node(node)
    assert plugin.call("revenue-status")["database"]["hydration"]["paginated"] is False


def test_status_answers_while_hydration_is_still_running(node):
    node.generate_history(2_000, start_time=NOW - 60 * 86400, end_time=NOW - 60, seed=6)
    node.fault("listforwards", "hang", seconds=8, times=1)      # the node holds the first page
    began = time.monotonic()
    plugin = start_plugin(node, wait_running=False, **{"revenue-ops-hydration-page-size": 200})
    status = plugin.call("revenue-status", timeout=2)
    while status["phase"] == "starting" and time.monotonic() - began < 7:
        time.sleep(0.05)
        status = plugin.call("revenue-status", timeout=2)
    # the first page is held for 8 s after start-up: the plugin cannot be running yet
    assert status["phase"] == "hydrating" and status["database"]["hydration"] is None
    wait_for_phase(plugin, "running", timeout=60)
    assert set(stored_forward_keys(node)) == settled_in_node(node)


def test_shutdown_during_hydration_stops_after_the_page_under_way_and_exits_cleanly(node):
    node.generate_history(2_000, start_time=NOW - 60 * 86400, end_time=NOW - 60, seed=7)
    node.fault("listforwards", "hang", seconds=1.0)       # every page takes a second
    plugin = start_plugin(node, wait_running=False, **{"revenue-ops-hydration-page-size": 100})
    wait_for_phase(plugin, "hydrating", timeout=30)
    time.sleep(1.5)
    began = time.monotonic()
    code = plugin.shutdown(timeout=20, grace=15)
    # the start-up thread stopped after the page under way and was out of the database before
    # it closed: nothing ran on after "stopped", a clean exit long before the 20 pages were read
    assert code == 0
    assert time.monotonic() - began < 10
    assert len(listforwards_pages(node, "created")) < 10
    assert plugin.logs[-1] == ("info", "cl-revenue-ops stopped")
    assert not [m for level, m in plugin.logs if level in ("warn", "broken") and "sling" not in m]
