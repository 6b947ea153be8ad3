"""Tests of the simulated Core Lightning node itself (fast: no real lightningd)."""
import json
import os
import socket
import textwrap
import threading
import time

import pytest
from pyln.client import LightningRpc, RpcError

from simnode import SimNode, SimRpcError

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = next(d for d in (os.path.join(HERE, "fixtures", "cln-samples"),
                           "/work/shared/cln-samples")
               if os.path.exists(os.path.join(d, "l2_listforwards.json")))


def sample(name):
    with open(os.path.join(SAMPLES, name)) as fh:
        return json.load(fh)


@pytest.fixture
def node(tmp_path):
    with SimNode(tmp_path) as n:
        yield n


def rpc_of(node):
    return LightningRpc(node.rpc_path)


def raw_call(node, method, params):
    """One request on a fresh connection, plain json (pyln's decoder is slow on 100k rows)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(node.rpc_path)
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                              "params": params}).encode())
        chunks = []
        while not b"".join(chunks[-2:]).endswith(b"\n\n"):
            chunks.append(s.recv(1 << 20))
    return json.loads(b"".join(chunks))["result"]


def rpc_error(fn, *args, **kw):
    with pytest.raises(RpcError) as err:
        fn(*args, **kw)
    return err.value.error


@pytest.fixture
def l2(node):
    """The sample network's l2: 103x1x0 in (remote opener), 103x2x0 out, three forwards."""
    node.add_channel(capacity_sats=1_000_000, local_sats=0, opener="remote", scid="103x1x0")
    node.add_channel(capacity_sats=1_000_000, local_sats=999_800, opener="local", scid="103x2x0")
    for fwd in sample("l2_listforwards.json")["forwards"]:
        node.add_forward("103x1x0", "103x2x0", fwd.get("out_msat", fwd["in_msat"]),
                         fwd.get("fee_msat", 0), status=fwd["status"],
                         received_time=fwd["received_time"],
                         resolved_time=fwd.get("resolved_time"), failcode=fwd.get("failcode"))
    return node


# ---- listforwards / wait ------------------------------------------------------
def test_listforwards_equals_samples(l2):
    rpc = rpc_of(l2)
    assert rpc.listforwards() == sample("l2_listforwards.json")
    assert rpc.listforwards(status="settled", index="created", start=2, limit=5) == \
        sample("l2_listforwards_paged_settled.json")
    assert rpc.listforwards(index="updated") == sample("l2_listforwards_updated.json")
    assert rpc.call("wait", ["forwards", "created", 1]) == sample("l2_wait_forwards.json")


def test_paging_semantics(l2):
    rpc = rpc_of(l2)
    ids = lambda res: [f["created_index"] for f in res["forwards"]]  # noqa: E731
    assert ids(rpc.listforwards(index="created", start=2)) == [2, 3]          # inclusive
    assert ids(rpc.listforwards(index="created", start=1, limit=2)) == [1, 2]
    assert ids(rpc.listforwards(index="created", start=4)) == []
    assert ids(rpc.listforwards(index="updated", start=2)) == [2]  # unresolved rows have 0
    assert ids(rpc.listforwards(index="created", limit=0)) == []
    # positional params like lightning-cli listforwards settled null null created 2 1
    assert ids(rpc.call("listforwards", ["settled", None, None, "created", 2, 1])) == [2]
    assert rpc_error(rpc.listforwards, start=2) == \
        sample("error_listforwards_start_no_index.json")
    assert rpc_error(rpc.listforwards, limit=2)["message"] == \
        "Can only specify {limit} with {index}"
    assert rpc_error(rpc.listforwards, in_channel="103x1x0", index="created", start=2)["code"] \
        == -32602
    # with a channel filter index and limit are ignored, as in CLN
    assert ids(rpc.listforwards(in_channel="103x1x0", index="created", limit=1)) == [1, 2, 3]
    assert ids(rpc.listforwards(out_channel="103x1x0")) == []
    assert rpc_error(rpc.listforwards, status="bogus")["code"] == -32602
    assert rpc_error(rpc.call, "listforwards", {"nope": 1})["message"].startswith(
        "unknown parameter: nope")


def test_wait_blocks_until_index_reached(l2):
    rpc, got = rpc_of(l2), {}
    waiter = threading.Thread(target=lambda: got.update(
        rpc.call("wait", {"subsystem": "forwards", "indexname": "created", "nextvalue": 4})))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()
    ci = l2.add_forward("103x1x0", "103x2x0", 5000, 1, status="offered")
    waiter.join(5)
    assert got == {"subsystem": "forwards", "created": 4,
                   "forwards": {"status": "offered", "in_channel": "103x1x0", "in_htlc_id": 3,
                                "in_msat": 5001, "out_channel": "103x2x0"}}
    assert l2.settle_forward(ci) == 3
    assert rpc.call("wait", ["forwards", "updated", 3])["updated"] == 3
    assert l2.forward(ci)["updated_index"] == 3


def test_forward_event_payloads_match_sample(l2):
    events = sample("forward_event.json")
    ours = [e for ci in (1, 2, 3) for e in l2.forwards.events(ci, history=True)]
    strip = lambda e: {k: v for k, v in e.items() if k not in ("payment_hash", "preimage")}  # noqa
    assert [strip(e) for e in ours] == [strip(e) for e in events]
    assert [list(e) for e in ours] == [list(e) for e in events]     # same keys, same order
    assert [e["status"] for e in l2.forwards.events(1)] == ["settled"]


# ---- shapes and faults -----------------------------------------------------------
def test_listpeerchannels_shape(node):
    scid = node.add_channel(capacity_sats=2_000_000, local_sats=1_500_000, fee_ppm=250,
                            htlcs_in_use=3)
    node.add_channel(opener="remote", connected=False)
    chans = rpc_of(node).listpeerchannels()["channels"]
    real = sample("l2_listpeerchannels.json")["channels"][0]
    ours = chans[0]
    assert set(real) <= set(ours)
    assert ours["short_channel_id"] == scid and ours["to_us_msat"] == 1_500_000_000
    assert ours["fee_proportional_millionths"] == 250 == ours["updates"]["local"][
        "fee_proportional_millionths"]
    assert len(ours["htlcs"]) == 3 and {h["direction"] for h in ours["htlcs"]} == {"in", "out"}
    assert ours["spendable_msat"] == 1_500_000_000 - 20_000_000 - 11_295_000
    assert chans[1]["peer_connected"] is False and "owner" not in chans[1]
    assert rpc_of(node).listpeerchannels(short_channel_id=scid)["channels"][0] == ours
    node.close_channel(scid)
    assert [c["short_channel_id"] for c in rpc_of(node).listpeerchannels()["channels"]] == \
        [chans[1]["short_channel_id"]]


def test_msat_shapes_and_old_shapes(l2):
    rpc = rpc_of(l2)
    assert isinstance(rpc.listforwards()["forwards"][0]["in_msat"], int)
    l2.fault("listforwards", "old_shapes")
    err = rpc_error(rpc.listforwards, index="created", start=1)
    assert err["code"] == -32602 and err["message"].startswith("unknown parameter: index")
    assert rpc_error(rpc.call, "listforwards", [None, None, None, "created"])["message"] == \
        "too many parameters: got 4, expected 3"
    fwd = rpc.call("listforwards")["forwards"][0]
    assert "created_index" not in fwd and "updated_index" not in fwd
    assert not isinstance(fwd["in_msat"], int)     # pyln turned "100002msat" into Millisatoshi
    l2.fault("listpeerchannels", "old_shapes")
    ch = rpc.listpeerchannels()["channels"][0]
    assert str(ch["to_us_msat"]) == "0msat" and not isinstance(ch["to_us_msat"], int)
    l2.clear_faults()
    assert "created_index" in rpc.listforwards()["forwards"][0]


def test_old_shapes_raw_strings(l2):
    l2.fault("listforwards", "old_shapes")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(l2.rpc_path)
        s.sendall(b'{"jsonrpc":"2.0","id":7,"method":"listforwards","params":{}}'
                  b'{"jsonrpc":"2.0","id":"x/8","method":"getinfo","params":[]}')
        buf = b""
        while buf.count(b"\n\n") < 2:
            buf += s.recv(65536)
    first, second = [json.loads(p) for p in buf.split(b"\n\n")[:2]]
    assert first["id"] == 7 and first["result"]["forwards"][0]["in_msat"] == "100002msat"
    assert second["id"] == "x/8" and second["result"]["version"] == "v26.06.6"


def test_error_hang_and_call_log(node):
    rpc = rpc_of(node)
    node.fault("listpeerchannels", "error", code=-1, message="boom")
    assert rpc_error(rpc.listpeerchannels) == {"code": -1, "message": "boom"}
    node.fault("getinfo", "hang", seconds=0.4)
    t0 = time.monotonic()
    rpc.getinfo()
    assert time.monotonic() - t0 >= 0.4
    node.fault("listfunds", "error", code=-32, message="once", times=1)
    assert rpc_error(rpc.listfunds)["message"] == "once"
    assert rpc.listfunds() == {"outputs": [], "channels": []}
    node.clear_faults()
    assert rpc.listpeerchannels() == {"channels": []}
    assert [m for m, _ in node.calls][:2] == ["listpeerchannels", "getinfo"]
    assert node.calls_of("listfunds") == [{}, {}]


def test_random_faults_draw_errors_hangs_and_answers_and_are_counted(node):
    rpc = rpc_of(node)
    node.fault("listfunds", "random", error_rate=0.3, hang_rate=0.2, seconds=(0.01, 0.02),
               seed=7, message="chaos")
    outcomes = {"error": 0, "answer": 0}
    t0 = time.monotonic()
    for _ in range(200):
        try:
            assert rpc.listfunds() == {"outputs": [], "channels": []}  # a hang still answers
            outcomes["answer"] += 1
        except RpcError as e:
            assert e.error == {"code": -1, "message": "chaos"}
            outcomes["error"] += 1
    injected = node.faults_injected()
    assert injected[("listfunds", "error")] == outcomes["error"]
    assert 30 <= outcomes["error"] <= 90                       # ~60 of 200
    assert 15 <= injected[("listfunds", "hang")] <= 70         # ~40 of 200
    assert time.monotonic() - t0 >= 0.01 * injected[("listfunds", "hang")]
    node.clear_faults()
    assert rpc.listfunds() == {"outputs": [], "channels": []}
    assert node.faults_injected() == injected
    with pytest.raises(ValueError):
        node.fault("listfunds", "random", error_rate=0.8, hang_rate=0.5)


def test_unknown_command_and_missing_sling(node):
    rpc = rpc_of(node)
    assert rpc_error(rpc.call, "nosuchcommand") == sample("error_unknown.json")
    assert rpc_error(rpc.call, "sling-jobsettings") == sample("error_sling_missing.json")
    names = [p["name"] for p in rpc.call("plugin", ["list"])["plugins"]]
    assert not any(n.endswith("/sling") for n in names)
    node.set_plugin_loaded("sling", True)
    node.set_plugin_loaded("clboss", True)
    assert rpc.call("sling-jobsettings") == {}
    names = [p["name"] for p in rpc.call("plugin", {"subcommand": "list"})["plugins"]]
    assert any(n.endswith("/sling") for n in names) and any(n.endswith("/clboss") for n in names)
    assert rpc.call("clboss-unmanage", ["02" + "11" * 32, "lnfee"]) == {}


def test_setchannel_and_funds(node):
    scid = node.add_channel()
    rpc = rpc_of(node)
    res = rpc.setchannel(scid, feebase=0, feeppm=250)
    assert set(res["channels"][0]) == set(sample("l2_setchannel.json")["channels"][0])
    assert node.channel(scid)["fee_ppm"] == 250 and node.channel(scid)["fee_base_msat"] == 0
    assert rpc_error(rpc.setchannel, "999x9x9") == sample("error_setchannel_bad.json")
    node.funds_onchain_msat = 995_073_000
    funds = rpc.listfunds()
    assert funds["outputs"][0]["amount_msat"] == 995_073_000
    assert set(funds["channels"][0]) == set(sample("l2_listfunds.json")["channels"][0])
    assert set(rpc.getinfo()) == set(sample("l2_getinfo.json"))
    assert rpc.feerates("perkw") == sample("l2_feerates.json")


# ---- plugin host -----------------------------------------------------------------
TINY = textwrap.dedent('''\
    #!/usr/bin/env python3
    import sys
    from pyln.client import Plugin
    plugin = Plugin()
    plugin.add_option("tiny-int", 7, "an int", opt_type="int")
    plugin.add_option("tiny-bool", False, "a bool", opt_type="bool")
    plugin.add_option("tiny-str", "abc", "a string")
    plugin.add_flag_option("tiny-flag", "a flag")
    plugin.add_option("tiny-dyn", "5", "dynamic", dynamic=True,
                      on_change=lambda plugin, name, value: plugin.log("dyn %s=%r" % (name, value)))

    @plugin.init()
    def init(options, configuration, plugin, **kw):
        if options.get("tiny-str") == "disable-me":
            return {"disable": "asked to disable"}
        plugin.log("tiny started " + repr(sorted(options.items())))

    @plugin.method("tiny-echo")
    def echo(plugin, what=None):
        return {"what": what, "node": plugin.rpc.getinfo()["id"]}

    @plugin.subscribe("forward_event")
    def on_forward(plugin, forward_event, **kw):
        plugin.log("forward %s %s" % (forward_event["status"], forward_event["in_msat"]))

    @plugin.subscribe("shutdown")
    def on_shutdown(plugin, **kw):
        plugin.log("bye")
        sys.exit(0)

    plugin.run()
    ''')


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return str(path)


def test_plugin_protocol(node, tiny):
    a, b = node.add_channel(), node.add_channel()
    plugin = node.start_plugin(tiny, options={"tiny-int": "42", "tiny-flag": True})
    msg = plugin.wait_for_log(r"tiny started")
    assert "('tiny-int', 42)" in msg and "('tiny-bool', False)" in msg
    assert "('tiny-flag', True)" in msg and "('tiny-str', 'abc')" in msg
    assert plugin.disabled is None and plugin.pid and plugin.rss_peak_kb() > 1000
    assert plugin.call("tiny-echo", {"what": 1}) == {"what": 1, "node": node.node_id}
    assert rpc_of(node).call("tiny-echo", ["via socket"])["what"] == "via socket"
    with pytest.raises(SimRpcError) as err:
        plugin.call("tiny-echo", {"bogus": 1})
    assert err.value.code == -32600
    assert any(p["name"] == plugin.path for p in rpc_of(node).call("plugin", ["list"])["plugins"])
    ci = node.add_forward(a, b, 123_000, 5)
    node.emit_forward(plugin, ci)
    assert plugin.wait_for_log(r"forward settled 123005")
    with pytest.raises(TimeoutError):
        plugin.wait_for_log(r"never logged", timeout=0.2)
    assert plugin.notify("connect", {"id": "x"}) is False      # not subscribed: not sent
    rpc_of(node).call("setconfig", ["tiny-dyn", 9])
    assert plugin.wait_for_log(r"dyn tiny-dyn=") == "dyn tiny-dyn='9'"   # value as a string
    # lightningd refuses itself what the plugin did not register dynamic (and a missing value)
    assert rpc_error(rpc_of(node).call, "setconfig", ["tiny-int", 3]) == {
        "code": -32602, "message": "config: Not a dynamic config option: invalid token '\"tiny-int\"'"}
    assert rpc_error(rpc_of(node).call, "setconfig", ["tiny-dyn"])["message"] == "tiny-dyn requires a value"
    assert rpc_error(rpc_of(node).call, "setconfig", ["tiny-nope", 1])["message"].startswith(
        "config: Unknown config option")
    assert plugin.shutdown() == 0
    assert any(m == "bye" for _, m in plugin.logs)
    assert plugin.rss_peak_kb() is None
    assert rpc_error(rpc_of(node).call, "tiny-echo")["code"] == -32601


def test_plugin_disable_and_kill(node, tiny):
    off = node.start_plugin(tiny, options={"tiny-str": "disable-me"})
    assert off.disabled == "asked to disable"
    assert not off.alive
    assert rpc_error(rpc_of(node).call, "tiny-echo")["code"] == -32601
    on = node.start_plugin(tiny)
    assert on.kill() < 0 and not on.alive
    with pytest.raises(SimRpcError) as err:
        on.call("tiny-echo")
    assert err.value.code == -4
    with pytest.raises(RuntimeError):
        node.start_plugin(tiny, options={"no-such-option": 1})


# ---- sling -------------------------------------------------------------------------
def test_sling_job_lifecycle(node):
    rpc = rpc_of(node)
    node.set_plugin_loaded("sling", True)
    dest = node.add_channel(capacity_sats=1_000_000, local_sats=100_000, fee_ppm=800)
    src = node.add_channel(capacity_sats=5_000_000, local_sats=4_000_000, fee_ppm=10)
    err = rpc_error(rpc.call, "sling-job", [dest, "pull"])
    assert err["code"] == -32700 and err["message"].startswith("Expected an object!")
    err = rpc_error(rpc.call, "sling-job", {"scid": dest, "direction": "pull", "amount": 50_000,
                                            "maxppm": 500})
    assert err["message"] == "Atleast one of outppm and candidatelist must be set."
    assert rpc_error(rpc.call, "sling-job", {"scid": "1x1x1", "direction": "pull",
                                             "amount": 1, "maxppm": 1, "outppm": 1}
                     )["message"] == "Channel not found"
    assert rpc.call("sling-job", {"scid": dest, "direction": "pull", "amount": 100_000,
                                  "maxppm": 500, "candidates": json.dumps([src]),
                                  "target": 0.4}) == {"result": "success"}
    assert rpc.call("sling-jobsettings", [dest]) == {dest: {
        "sat_direction": "Pull", "amount_msat": 100_000_000, "maxppm": 500,
        "candidates": [src], "target": 0.4}}
    assert node.sling.step() == []           # not started yet
    assert rpc.call("sling-go") == {"tasks_started": 1, "tasks_failed_start:": 0}
    moves = [m for _ in range(5) for m in node.sling.step()]
    assert len(moves) == 3 and all(m["ok"] for m in moves)   # 100k -> 400k sat, then balanced
    assert node.channel(dest)["local_msat"] == 400_000_000
    assert node.channel(src)["local_msat"] == 4_000_000_000 - 3 * (100_000_000 + 30_000)
    assert node.sling.state_of(dest) == ["Balanced"]
    stats = rpc.call("sling-stats", [dest, True])
    succ = stats["successes_in_time_window"]
    assert stats["failures_in_time_window"] is None
    assert succ["total_amount_sats"] == 300_000 and succ["total_rebalances"] == 3
    # sling computes int(300 * 1e-6 * 300_000_000) // 1000 in f64: 89999.99.. -> 89
    assert succ["feeppm_weighted_avg"] == 300 and succ["total_spent_sats"] == 89
    assert succ["top_5_channel_partners"][0]["scid"] == src
    assert succ["last_channel_partner"] == src
    summary = rpc.call("sling-stats", {"json": True})
    assert summary[0]["scid"] == dest and summary[0]["status"] == ["1:Balanced"]
    assert rpc.call("sling-stop", [dest]) == {"stopped_count": 1}
    assert rpc.call("sling-deletejob", ["all"]) == {"result": "success"}
    assert rpc.call("sling-jobsettings") == {}


def test_sling_once_moves_exactly_its_amount_and_stops(node):
    rpc = rpc_of(node)
    node.set_plugin_loaded("sling", True)
    dest = node.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=800)
    src = node.add_channel(capacity_sats=5_000_000, local_sats=4_500_000, fee_ppm=10)
    once = {"scid": dest, "direction": "pull", "amount": 100_000, "maxppm": 500,
            "candidates": [src], "onceamount": 300_000}
    assert rpc_error(rpc.call, "sling-once", [dest])["message"].startswith("Expected an object!")
    for change, message in (
            ({"target": 0.5}, "`target` can not be used with `sling-once`"),
            ({"onceamount": None}, "Missing onceamount"),
            ({"onceamount": -5}, "onceamount must be a positive integer"),
            ({"onceamount": 0}, "onceamount must be greater than 0"),
            ({"onceamount": 250_000}, "onceamount must be a multiple of amount. onceamount: "
                                      "250000, amount: 100000"),
            ({"onceamount": 1_900_000}, f"Channel {dest} has not enough capacity to pull "
                                        "1900000000msat"),
            ({"speed": 1}, "Invalid argument: speed")):
        params = {k: v for k, v in dict(once, **change).items() if v is not None}
        err = rpc_error(rpc.call, "sling-once", params)
        assert err["code"] == -32700 and err["message"] == message
    assert rpc.call("sling-once", once) == {"result": "started"}
    assert rpc_error(rpc.call, "sling-once", once)["message"] == \
        "There is already a job for that scid running!"
    job = {k: v for k, v in once.items() if k != "onceamount"}
    assert rpc_error(rpc.call, "sling-job", job)["message"] == \
        "Once-job is currently running for this channel"
    assert rpc.call("sling-jobsettings") == {}                      # not a job
    assert rpc.call("sling-stats", {"json": True})[0]["status"] == ["1:Starting"]
    node.sling.payments_per_step = 10                                # pays as fast as it can
    moves = node.sling.step() + node.sling.step()
    assert len(moves) == 3 and node.channel(dest)["local_msat"] == 400_000_000
    assert node.sling.state_of(dest) == ["Balanced"]
    assert rpc.call("sling-stats", [dest, True])["successes_in_time_window"]["total_amount_sats"] \
        == 300_000
    assert rpc.call("sling-once", dict(once, onceamount=100_000)) == {"result": "started"}
    assert rpc.call("sling-stop", [dest]) == {"stopped_count": 1}
    assert node.sling.step() == [] and node.sling.state_of(dest) == ["Stopped"]
    assert rpc.call("sling-deletejob", [dest]) == {"result": "success"}
    assert rpc.call("sling-stats", {"json": True}) == []


def test_sling_unroutable_and_background(node):
    node.set_plugin_loaded("sling", True)
    dest = node.add_channel(capacity_sats=1_000_000, local_sats=0, opener="remote")
    node.add_channel(capacity_sats=5_000_000, local_sats=4_000_000)
    node.sling.add_job(dest, "pull", amount=50_000, maxppm=1000, outppm=2000)
    node.sling.rpc_go([])
    node.sling.unroutable.add(dest)
    assert [m["ok"] for m in node.sling.step()] == [False]
    fails = rpc_of(node).call("sling-stats", {"scid": dest, "json": True})[
        "failures_in_time_window"]
    assert fails["total_rebalances_tried"] == 1 and fails["total_amount_tried_sats"] == 50_000
    assert fails["top_5_failure_reasons"][0]["failure_reason"] == "WIRE_TEMPORARY_CHANNEL_FAILURE"
    node.sling.unroutable.clear()
    node.sling.effective_ppm = 5000
    assert node.sling.step() == [] and node.sling.state_of(dest) == ["NoCheapRoute"]
    node.sling.effective_ppm = 100
    node.sling.step_interval = 0.02
    deadline = time.time() + 3
    while node.channel(dest)["local_msat"] == 0 and time.time() < deadline:
        time.sleep(0.02)
    node.sling.step_interval = None
    assert node.channel(dest)["local_msat"] > 0


# ---- bulk history ------------------------------------------------------------------
def test_generate_history_100k_pages(node):
    chans = [node.add_channel(fee_ppm=50 * i) for i in range(1, 9)]
    node.generate_history(100_000, start_time=1_700_000_000, end_time=1_702_592_000, seed=7)
    rpc = rpc_of(node)
    seen, start = 0, 1
    while True:
        page = raw_call(node, "listforwards", {"index": "created", "start": start,
                                               "limit": 25_000})["forwards"]
        if not page:
            break
        assert page[0]["created_index"] == start
        seen += len(page)
        start = page[-1]["created_index"] + 1
    assert seen == 100_000
    settled = rpc.listforwards(status="settled", index="updated", start=1, limit=100)["forwards"]
    assert [f["updated_index"] for f in settled] == sorted(f["updated_index"] for f in settled)
    assert all(f["fee_msat"] == 1 + f["out_msat"] * node.channel(f["out_channel"])["fee_ppm"]
               // 1_000_000 for f in settled)
    assert {f["in_channel"] for f in settled} <= set(chans)
    counts = {}
    for f in raw_call(node, "listforwards", {"in_channel": chans[0]})["forwards"]:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    assert counts.get("settled", 0) > counts.get("failed", 0)
    assert rpc.call("wait", ["forwards", "created", 100_000])["created"] == 100_000
    assert rpc.getinfo()["fees_collected_msat"] == node.forwards.fees_collected_msat > 0


def test_long_socket_path(tmp_path):
    with SimNode(tmp_path / ("d" * 90)) as n:
        assert len(n.rpc_path) > 108
        assert rpc_of(n).getinfo()["num_active_channels"] == 0
    assert not os.path.lexists(n.rpc_path)
