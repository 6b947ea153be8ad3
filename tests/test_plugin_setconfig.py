"""Options changed at runtime: `lightning-cli setconfig` through the simulated lightningd to the
real plugin, checked as at start-up, used by the loops from their next cycle."""
import time

import pytest
from pyln.client import RpcError

from modules.config import OPTIONS
from plugin_harness import node_rpc, start_plugin
from simnode import SimRpcError
from test_plugin_policy import decision, fees_set, market, node  # noqa: F401 (the fixtures)
from test_plugin_rebalance import BUDGET


def setconfig(node, name, value):
    return node_rpc(node).call("setconfig", {"config": name, "val": value})


def refused(node, name, value):
    with pytest.raises(RpcError) as err:
        setconfig(node, name, value)
    return err.value.error


def test_every_option_but_the_database_path_and_metrics_port_is_registered_dynamic(node):
    plugin = start_plugin(node)
    registered = {o["name"]: o for o in plugin.manifest["options"]}
    assert set(registered) == {o.full_name for o in OPTIONS}
    assert [n for n, o in registered.items() if not o["dynamic"]] == ["revenue-ops-db-path",
                                                                       "revenue-ops-metrics-port"]
    assert all(o["type"] == "string" for o in registered.values())


def test_a_lower_max_fee_caps_the_next_cycle_and_status_shows_it(node):
    plugin = start_plugin(node)
    answer = setconfig(node, "revenue-ops-max-fee-ppm", 900)       # lightning-cli sends a number
    assert answer["config"]["config"] == "revenue-ops-max-fee-ppm"
    assert answer["config"]["value_str"] == "900" and answer["config"]["dynamic"] is True
    assert answer["config"]["source"] == f"{node.lightning_dir}/config:2"   # where lightningd writes it
    assert plugin.call("revenue-status")["options"]["revenue-ops-max-fee-ppm"] == 900
    result = plugin.call("revenue-adjust-fees")
    busy = node.ids["busy"]
    assert fees_set(node)[busy] == 900                             # congested: the new ceiling
    assert "priced at the ceiling 900 ppm" in " ".join(decision(result, busy)["reasons"])
    assert all(fee <= 900 for fee in fees_set(node).values())
    plugin.wait_for_log(r"option revenue-ops-max-fee-ppm is now 900")
    # raised again: the next cycle prices up to it
    setconfig(node, "revenue-ops-max-fee-ppm", "2000")
    seen = len(node.calls_of("setchannel"))
    plugin.call("revenue-adjust-fees")
    assert fees_set(node, seen).get(busy) == 2000


BAD_VALUES = [
    ("revenue-ops-max-fee-ppm", "abc", "revenue-ops-max-fee-ppm: 'abc' is not valid; expected int from 1 to 100000;"
                                       " revenue-ops-max-fee-ppm stays 2500"),
    ("revenue-ops-max-fee-ppm", "0", "revenue-ops-max-fee-ppm: 0 is out of range; expected int from 1 to 100000;"
                                     " revenue-ops-max-fee-ppm stays 2500"),
    ("revenue-ops-max-fee-ppm", "12.5", "expected int from 1 to 100000"),
    ("revenue-ops-min-fee-ppm", "3000", "revenue-ops-min-fee-ppm (3000) must not exceed revenue-ops-max-fee-ppm"
                                        " (2500); revenue-ops-min-fee-ppm stays 1"),
    ("revenue-ops-flow-ratio-threshold", "nan", "expected float from 0.01 to 1; revenue-ops-flow-ratio-threshold"
                                                " stays 0.3"),
    ("revenue-ops-dry-run", "maybe", "expected true or false; revenue-ops-dry-run stays false"),
    ("revenue-ops-rebalance-chunk-sats", "9000000", "must not exceed revenue-ops-rebalance-max-amount-sats"),
    ("revenue-ops-fee-interval-seconds", "5", "expected int from 10 to 86400"),
]


def test_a_bad_value_is_refused_with_its_range_and_the_old_value_stays(node):
    plugin = start_plugin(node)
    before = plugin.call("revenue-status")["options"]
    for name, value, message in BAD_VALUES:
        error = refused(node, name, value)
        assert error["code"] == -32602 and message in error["message"], (name, value, error)
        assert set(error) == {"code", "message"}                   # no traceback reaches the caller
    assert plugin.call("revenue-status")["options"] == before
    assert not any("Traceback" in m for _, m in plugin.logs)       # a refusal is no crash
    result = plugin.call("revenue-adjust-fees")                    # and the loops run on the old values
    assert fees_set(node)[node.ids["busy"]] == 2500 and result["cycle"]["failed"] == 0


def test_the_database_path_cannot_change_at_runtime(node):
    plugin = start_plugin(node)
    error = refused(node, "revenue-ops-db-path", "/tmp/elsewhere.db")
    assert error["code"] == -32602 and "Not a dynamic config option" in error["message"]
    assert plugin.call("revenue-status")["database"]["path"].endswith("revenue_ops.db")
    error = refused(node, "revenue-ops-metrics-port", "9750")      # the endpoint opens at start-up only
    assert error["code"] == -32602 and "Not a dynamic config option" in error["message"]
    assert plugin.call("revenue-status")["options"]["revenue-ops-metrics-port"] == 0


def test_dry_run_switched_off_at_runtime_sets_fees_from_the_next_cycle(node):
    plugin = start_plugin(node, **{"revenue-ops-dry-run": True})
    plugin.call("revenue-adjust-fees")
    assert node.calls_of("setchannel") == []
    setconfig(node, "revenue-ops-dry-run", "false")
    status = plugin.call("revenue-status")
    assert status["dry_run"] is False and status["options"]["revenue-ops-dry-run"] is False
    result = plugin.call("revenue-adjust-fees")
    assert result["cycle"]["dry_run"] is False and result["cycle"]["changed"] >= 1
    assert fees_set(node)


def test_a_loop_interval_change_applies_to_the_wait_under_way(node):
    plugin = start_plugin(node, **{"revenue-ops-loop-jitter-percent": 0})   # the fee loop waits a day
    assert plugin.call("revenue-status")["loops"]["fee"]["next_run"] > time.time() + 80000
    setconfig(node, "revenue-ops-fee-interval-seconds", "10")
    deadline = time.time() + 5
    while plugin.call("revenue-status")["loops"]["fee"]["next_run"] > time.time() + 12 and time.time() < deadline:
        time.sleep(0.05)
    assert plugin.call("revenue-status")["loops"]["fee"]["next_run"] <= time.time() + 12


def test_a_shorter_rpc_timeout_bounds_the_next_node_call(node):
    plugin = start_plugin(node)
    setconfig(node, "revenue-ops-rpc-timeout-seconds", 1)
    # every call hangs (a single hanging call could be taken by a loop's own listpeerchannels)
    node.fault("listpeerchannels", "hang", seconds=10)
    began = time.monotonic()
    with pytest.raises(SimRpcError) as err:
        plugin.call("revenue-fees")
    assert time.monotonic() - began < 8           # gave up long before the 10 s hang ended (60 s before)
    assert "no answer within 1 s" in err.value.message
    node.clear_faults("listpeerchannels")


def test_a_new_page_size_is_used_by_the_next_catch_up(node):
    plugin = start_plugin(node)
    setconfig(node, "revenue-ops-hydration-page-size", "100")
    busy, even = node.ids["busy"], node.ids["even"]
    for i in range(250):
        node.add_forward(busy, even, out_msat=1_000_000, fee_msat=100, received_time=time.time() - 60 + i * 0.1)
    seen = len(node.calls_of("listforwards"))
    assert plugin.call("revenue-analyze")
    pages = [c for c in node.calls_of("listforwards")[seen:] if c.get("index") == "created"]
    assert [c["limit"] for c in pages] == [100, 100, 100]


def test_a_new_budget_is_what_the_next_rebalance_may_spend(market):
    plugin = start_plugin(market, **BUDGET)
    plugin.call("revenue-analyze")
    setconfig(market, "revenue-ops-daily-budget-sats", "0")
    with pytest.raises(SimRpcError) as err:
        plugin.call("revenue-rebalance", {"scid": market.ids["D"]})
    assert err.value.code == -32001 and "of 0 sat" in err.value.message
    assert plugin.call("revenue-status")["rebalancing"]["budget"]["limit_sats"] == 0
    setconfig(market, "revenue-ops-daily-budget-sats", "5000")
    assert plugin.call("revenue-rebalance", {"scid": market.ids["D"]})["decision"]["start"] is True
