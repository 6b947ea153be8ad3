"""What an operator sees when a call is wrong, and when the plugin itself fails: through the
real plugin process, reading the raw JSON-RPC answers (pyln-client would add a `traceback`)."""
import json

import pytest

from plugin_harness import start_plugin
from simnode import SimNode

BIG = "x" * 100_000


def three_channels(sim):
    sim.scids = [sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000) for _ in range(3)]
    sim.funds_onchain_msat = 50_000_000_000
    return sim


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        yield three_channels(sim)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One plugin for the calls that change nothing (a refused call changes nothing)."""
    with SimNode(str(tmp_path_factory.mktemp("shared"))) as sim:
        three_channels(sim)
        yield start_plugin(sim)


def raw_error(plugin, method, params):
    """The error object of the plugin's raw answer (as lightningd relays it to the caller)."""
    answer = plugin.forward(method, params)
    assert "error" in answer, f"{method} {params!r} did not fail: {answer}"
    return answer["error"]


def assert_plain(error):
    """A deliberate error: {code, message}, no Python stack anywhere in it."""
    assert set(error) == {"code", "message"}, error
    assert "Traceback" not in error["message"] and "File \"" not in error["message"]


# (method, params, expected code, words the message must hold)
BAD_CALLS = [
    # parameters that cannot bind: -32602 naming the parameter
    ("revenue-fees", {"verbose": True}, -32602, ["unknown parameter 'verbose'", "scid"]),
    ("revenue-fees", ["1x1x1", "extra"], -32602, ["too many parameters", "at most 1", "scid"]),
    ("revenue-status", {"channel": "1x1x1"}, -32602, ["unknown parameter 'channel'", "no parameters"]),
    ("revenue-status", [1], -32602, ["too many parameters", "no parameters"]),
    ("revenue-analyze", {"now": 1}, -32602, ["unknown parameter 'now'"]),
    ("revenue-adjust-fees", [True], -32602, ["too many parameters"]),
    ("revenue-rebalance", ["1x1x1", 1000, True, "more"], -32602,
     ["too many parameters", "scid, amount_sats, force"]),
    ("revenue-rebalance", {"scid": "1x1x1", "amount": 5}, -32602, ["unknown parameter 'amount'"]),
    # wrong JSON types
    ("revenue-fees", {"scid": ["1x1x1"]}, -32602, ["scid must be a short channel id", "an array"]),
    ("revenue-fees", {"scid": {"id": "1x1x1"}}, -32602, ["scid must be a short channel id", "an object"]),
    ("revenue-fees", [103], -32602, ["scid must be a short channel id", "a number"]),
    ("revenue-rebalance", {"scid": "1x1x1", "amount_sats": "lots"}, -32602, ["amount_sats", "whole number"]),
    ("revenue-rebalance", {"scid": "1x1x1", "amount_sats": 1.5}, -32602, ["amount_sats", "whole number"]),
    ("revenue-rebalance", {"scid": "1x1x1", "amount_sats": True}, -32602, ["amount_sats", "whole number"]),
    ("revenue-rebalance", {"scid": "1x1x1", "force": "yes"}, -32602, ["force must be true or false"]),
    ("revenue-rebalance", {"scid": [1]}, -32602, ["scid must be a short channel id", "an array"]),
    # values: a scid is matched in full
    ("revenue-fees", {"scid": "700000x0x0\n"}, -32602, ["malformed short channel id", "scid"]),
    ("revenue-fees", {"scid": " 700000x0x0"}, -32602, ["malformed short channel id"]),
    ("revenue-fees", {"scid": "\u0661x1x0"}, -32602, ["malformed short channel id"]),   # an Arabic-Indic digit
    ("revenue-rebalance", {"scid": "700000x0x0\n"}, -32602, ["malformed short channel id"]),
    ("revenue-fees", {"scid": "1x2x3"}, -32602, ["unknown channel 1x2x3"]),
    ("revenue-rebalance", {"scid": "1x1x1", "amount_sats": -5}, -32602, ["amount_sats must be between 1 and"]),
]


@pytest.mark.parametrize("method,params,code,words", BAD_CALLS,
                         ids=[f"{m}-{json.dumps(p)[:30]}" for m, p, _, _ in BAD_CALLS])
def test_a_wrong_call_gets_code_and_message_only_naming_the_parameter(shared, method, params, code, words):
    plugin = shared
    error = raw_error(plugin, method, params)
    assert_plain(error)
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]
    assert plugin.call("revenue-status")["phase"] == "running"
    assert not [m for level, m in plugin.logs if level == "broken"]


@pytest.mark.parametrize("method,params", [
    ("revenue-fees", {"scid": BIG}),
    ("revenue-fees", {"scid": "1" * 100_000 + "x1x1"}),       # digits only: still not a scid
    ("revenue-fees", {BIG: 1}),                                # a huge keyword
    ("revenue-rebalance", {"scid": "1x1x1", "force": BIG}),
    ("revenue-rebalance", {"scid": "1x1x1", "amount_sats": BIG}),
    ("revenue-rebalance", {"scid": "1x1x1", "amount_sats": 10 ** 4000}),
])
def test_a_huge_input_is_not_echoed_back_whole(shared, method, params):
    plugin = shared
    error = raw_error(plugin, method, params)
    assert_plain(error)
    assert error["code"] == -32602
    assert len(error["message"]) < 300, len(error["message"])


@pytest.mark.parametrize("method,params_text", [
    ("revenue-fees", '{"scid": ' + "9" * 5000 + "}"),            # beyond Python's 4300-digit limit
    ("revenue-rebalance", '["1x1x1", ' + "9" * 5000 + "]"),
    ("revenue-rebalance", '{"scid": "1x1x1", "force": -' + "9" * 5000 + "}"),
], ids=["scid", "amount_sats", "force"])
def test_an_integer_of_thousands_of_digits_is_refused_and_the_plugin_lives_on(shared, method, params_text):
    answer = shared.call_raw(method, params_text)
    assert "error" in answer, answer
    assert_plain(answer["error"])
    assert answer["error"]["code"] == -32602 and len(answer["error"]["message"]) < 300
    assert shared.alive and shared.call("revenue-status")["phase"] == "running"


def test_refusals_of_a_valid_request_carry_no_traceback(node):
    node.set_plugin_loaded("sling", False)
    plugin = start_plugin(node)
    no_sling = raw_error(plugin, "revenue-rebalance", {"scid": node.scids[0]})
    assert_plain(no_sling)
    assert no_sling["code"] == -32001 and "sling plugin not loaded" in no_sling["message"]
    assert plugin.shutdown() == 0

    node.set_plugin_loaded("sling", True)
    plugin = start_plugin(node, **{"revenue-ops-daily-budget-sats": 0})
    no_budget = raw_error(plugin, "revenue-rebalance", {"scid": node.scids[0]})
    assert_plain(no_budget)
    assert no_budget["code"] == -32001 and "budget exhausted" in no_budget["message"]
    needs_scid = raw_error(plugin, "revenue-rebalance", {"amount_sats": 1000})
    assert_plain(needs_scid)
    assert "amount_sats needs a scid" in needs_scid["message"]


def test_a_failing_node_is_reported_by_its_message_without_traceback(node):
    plugin = start_plugin(node)
    node.fault("listpeerchannels", "error", code=-1, message="boom")
    error = raw_error(plugin, "revenue-fees", {})
    assert_plain(error)
    assert "listpeerchannels" in error["message"] and "boom" in error["message"]
    node.clear_faults()
    assert plugin.call("revenue-fees")["channels"]


def test_a_bug_of_ours_answers_a_plain_error_and_logs_the_trace(node):
    plugin = start_plugin(node)
    node.update_channel(node.scids[0], fee_ppm="not-a-number")   # parse_channel's int() fails
    error = raw_error(plugin, "revenue-fees", {})
    assert set(error) == {"code", "message"}
    assert error["code"] == -32603
    assert "revenue-fees failed on an internal error" in error["message"]
    broken = [m for level, m in plugin.logs if level == "broken"]
    assert any("revenue-fees failed on an unexpected error" in m for m in broken)
    assert any(m.startswith("Traceback") for m in broken)
    assert any("ValueError" in m for m in broken)
    assert plugin.call("revenue-status")["phase"] == "running"   # the plugin lives on


def test_documented_usage_is_unchanged(shared):
    usage = {m["name"]: m["usage"] for m in shared.manifest["rpcmethods"]}
    assert usage == {"revenue-status": "", "revenue-analyze": "", "revenue-fees": "[scid]",
                     "revenue-adjust-fees": "", "revenue-rebalance": "[scid] [amount_sats] [force]",
                     "revenue-policy": "[action] [peer_id] [strategy] [fee_ppm] [min_fee_ppm] [max_fee_ppm] "
                                       "[rebalance] [expires_hours]",
                     "revenue-report": "[days] [id] [view] [count]"}


def test_good_calls_bind_by_position_and_by_name(shared):
    plugin = shared
    scid = plugin.node.scids[1]
    by_name = plugin.call("revenue-fees", {"scid": scid})["channels"]
    by_position = plugin.call("revenue-fees", [scid])["channels"]
    assert [c["short_channel_id"] for c in by_name] == [c["short_channel_id"] for c in by_position] == [scid]
    assert plugin.call("revenue-fees", {"scid": None})["channels"]       # null: not given
    assert plugin.call("revenue-rebalance", [])["ran"] is False         # no sling: the pass says so
