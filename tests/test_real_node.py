"""The plugin on real Core Lightning nodes (pyln-testing, regtest).

Skipped when the lightningd and bitcoind binaries are not on PATH, as in CI here: no
registry we can use ships them. To run them, build the lab once (see
/work/shared/realnode/build.sh), then:

    source /work/lab/env.sh && .venv/bin/python -m pytest -v tests/test_real_node.py

pyln-testing's `wait_for_log` searches on from its last match, so a line logged before
the wait began may be skipped: these tests poll `revenue-status` or use `is_in_log`.
"""
import os
import shutil
import sqlite3
import sys

import pytest

from conftest import PLUGIN_PATH

HAVE_BINARIES = bool(shutil.which("lightningd") and shutil.which("bitcoind"))
pytestmark = [pytest.mark.skipif(not HAVE_BINARIES, reason="lightningd and bitcoind are not installed"),
              pytest.mark.timeout(900)]

if HAVE_BINARIES:   # importing pyln.testing needs the binaries: collection in CI must not
    from pyln.client import RpcError
    from pyln.testing.fixtures import *  # noqa: F401,F403  (node_factory and friends)
    from pyln.testing.utils import sync_blockheight, wait_for

CHANNEL_SATS = 1_000_000
MIN_FEE_PPM = 300            # above pyln-testing's default of 10 ppm: the plugin must raise it


@pytest.fixture(autouse=True)
def plugin_python(monkeypatch):
    """lightningd runs the plugin with the first `python3` on PATH: make it this one, which
    has pyln-client (the system python may not)."""
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def routing_node(node_factory, l2_options):
    """l1 - l2 - l3 and l2 - l4: l2 routes l1's payments to l3 and l4 over its 3 channels."""
    # may_reconnect: l2 restarts, its peers reconnect (pyln-testing flags that otherwise)
    l1, l2, l3, l4 = node_factory.get_nodes(4, opts=[{"may_reconnect": True},
                                                     dict(l2_options, may_reconnect=True),
                                                     {"may_reconnect": True}, {"may_reconnect": True}])
    pairs = [(l1, l2), (l2, l3), (l2, l4)]
    bitcoind = l1.bitcoin
    for src, dst in pairs:
        src.rpc.connect(dst.info["id"], "localhost", dst.port)
        bitcoind.rpc.sendtoaddress(src.rpc.newaddr("bech32")["bech32"], (CHANNEL_SATS + 100_000) / 10**8)
    bitcoind.generate_block(1)
    sync_blockheight(bitcoind, [l1, l2, l3, l4])
    txids = [src.rpc.fundchannel(dst.info["id"], CHANNEL_SATS)["txid"] for src, dst in pairs]
    bitcoind.generate_block(6, wait_for_mempool=txids)   # confirmed and deep enough to announce
    for src, dst in pairs:
        wait_for(lambda: src.channel_state(dst) == "CHANNELD_NORMAL")
    scids = {name: src.get_channel_scid(dst) for name, (src, dst) in zip(("l1", "l3", "l4"), pairs)}
    wait_for(lambda: len(l1.rpc.listchannels()["channels"]) == 6)   # l1 can route through l2
    return l1, l2, l3, l4, scids


def reconnect(node, peers):
    """After a restart: the peers connect again at once (not on their back-off) and every
    channel is usable from both ends before the next payment."""
    for peer in peers:
        peer.rpc.connect(node.info["id"], "localhost", node.port)
    for a, b in [(node, p) for p in peers] + [(p, node) for p in peers]:
        wait_for(lambda: all(c["peer_connected"] and a.is_local_channel_active(c["short_channel_id"])
                             for c in a.rpc.listpeerchannels(b.info["id"])["channels"]))


def pay(payer, payee, amount_msat, label):
    invoice = payee.rpc.invoice(amount_msat, label, "through l2")["bolt11"]
    return payer.rpc.pay(invoice)


def status(node):
    return node.rpc.call("revenue-status")


def wait_running(node):
    wait_for(lambda: plugin_answers(node) and status(node)["phase"] == "running")
    return status(node)


def plugin_answers(node):
    try:
        status(node)
        return True
    except RpcError:   # not started yet, or stopped
        return False


def settled_forwards(node):
    return {(f["in_channel"], f["in_htlc_id"]) for f in node.rpc.listforwards(status="settled")["forwards"]}


def stored_forwards(node):
    path = status(node)["database"]["path"]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT in_channel, in_htlc_id FROM forwards").fetchall()


def assert_each_forward_stored_once(node):
    rows = stored_forwards(node)
    assert len(rows) == len(set(rows))
    assert set(rows) == settled_forwards(node)
    assert status(node)["database"]["forwards_rows"] == len(rows)


def local_fees_ppm(node):
    return {c["short_channel_id"]: c["updates"]["local"]["fee_proportional_millionths"]
            for c in node.rpc.listpeerchannels()["channels"]}


def assert_no_broken_logs(nodes):
    for n in nodes:
        assert not n.daemon.is_in_log(r"\*\*BROKEN\*\*"), f"{n.daemon.prefix} logged **BROKEN**"


def test_a_routing_node_stores_forwards_sets_fees_restarts_and_reloads(node_factory):
    l1, l2, l3, l4, scids = routing_node(node_factory, {"plugin": PLUGIN_PATH, "revenue-ops-dry-run": "false"})
    nodes = [l1, l2, l3, l4]

    # loaded with its defaults and dry-run off; the live forwards are stored as they settle
    first = wait_running(l2)
    assert first["dry_run"] is False and first["startup_error"] is None
    assert first["sling"]["loaded"] is False                      # no sling here: rebalancing off
    assert all(loop["next_run"] is not None for loop in first["loops"].values())
    for i, (payee, amount_msat) in enumerate([(l3, 50_000_000), (l4, 70_000_000), (l3, 90_000_000),
                                              (l4, 20_000_000)]):
        pay(l1, payee, amount_msat, f"before-{i}")
    forwarded = len(settled_forwards(l2))     # one per payment, or more if a payment was split
    assert forwarded >= 4
    # stored from the live events: no catch-up runs now (the flow loop waits 900 s)
    wait_for(lambda: status(l2)["database"]["forwards_rows"] == forwarded)
    assert_each_forward_stored_once(l2)
    flows = {c["short_channel_id"]: c for c in l2.rpc.call("revenue-analyze")["channels"]}
    assert set(flows) == set(scids.values())
    assert 230_000 <= flows[scids["l1"]]["in_sats"] <= 230_100          # amounts plus l2's fees
    assert flows[scids["l3"]]["out_sats"] == 140_000 and flows[scids["l4"]]["out_sats"] == 90_000
    l2.rpc.call("revenue-adjust-fees")                           # defaults: answers, nothing forced

    # restart with the database kept: nothing stored twice, and it carries on storing
    l2.restart()
    after_restart = wait_running(l2)
    assert after_restart["database"]["hydration"]["rows_added"] == 0
    assert after_restart["database"]["forwards_rows"] == forwarded
    reconnect(l2, [l1, l3, l4])
    pay(l1, l4, 30_000_000, "after-restart")
    forwarded = len(settled_forwards(l2))
    wait_for(lambda: status(l2)["database"]["forwards_rows"] == forwarded)
    assert_each_forward_stored_once(l2)

    # plugin stop at runtime: lightningd routes on without it; plugin start catches up
    l2.rpc.plugin_stop(PLUGIN_PATH)
    assert not plugin_answers(l2)
    pay(l1, l3, 40_000_000, "while-stopped")
    missed = len(settled_forwards(l2)) - forwarded
    assert missed >= 1
    fees_before = local_fees_ppm(l2)
    assert all(ppm < MIN_FEE_PPM for ppm in fees_before.values())      # lightningd's 10 ppm
    l2.rpc.plugin_start(PLUGIN_PATH, **{"revenue-ops-min-fee-ppm": MIN_FEE_PPM})
    restarted = wait_running(l2)
    assert restarted["database"]["hydration"]["rows_added"] == missed  # what it missed, no more
    assert_each_forward_stored_once(l2)

    # fees really change: 10 ppm is below the minimum it was started with, so it raises them
    l2.rpc.call("revenue-adjust-fees")
    fees = local_fees_ppm(l2)
    assert set(fees) == set(scids.values())
    assert all(MIN_FEE_PPM <= ppm <= 2500 for ppm in fees.values()), fees
    # ... and the network hears of it: l1 sees l2's new fee on the channels behind it
    for scid in (scids["l3"], scids["l4"]):
        wait_for(lambda: [c["fee_per_millionth"] for c in l1.rpc.listchannels(scid)["channels"]
                          if c["source"] == l2.info["id"]] == [fees[scid]])
    pay(l1, l3, 100_000_000, "after-the-fee-change")   # (the old fee stays valid for a while)
    forwarded = len(settled_forwards(l2))
    wait_for(lambda: status(l2)["database"]["forwards_rows"] == forwarded)
    assert_each_forward_stored_once(l2)
    assert status(l2)["phase"] == "running"
    assert_no_broken_logs(nodes)


def test_a_bad_option_disables_the_plugin_and_lightningd_runs_on(node_factory):
    # not a number: were the option typed "int", lightningd itself would refuse to start
    l1 = node_factory.get_node(options={"plugin": PLUGIN_PATH, "revenue-ops-flow-window-days": "abc"})
    assert l1.daemon.is_in_log(r"disabled itself at init: cl-revenue-ops: revenue-ops-flow-window-days: "
                               r"'abc' is not valid; expected int from 1 to 365")
    assert l1.rpc.getinfo()["id"]
    assert not plugin_answers(l1)
    # the same at runtime: `plugin start` says why, and the node runs on. (lightningd hands a
    # restarted plugin its command-line options again, so each start overrides the bad one.)
    fixed = {"revenue-ops-flow-window-days": 7}
    for options, why in (({"revenue-ops-flow-window-days": 0}, "flow-window-days: 0 is out of range"),
                         ({"revenue-ops-min-fee-ppm": 500, "revenue-ops-max-fee-ppm": 100}, "min-fee-ppm"),
                         ({"revenue-ops-flow-ratio-threshold": "lots"}, "flow-ratio-threshold: 'lots'"),
                         ({"revenue-ops-dry-run": "maybe"}, "dry-run: 'maybe' is not valid")):
        with pytest.raises(RpcError) as refused:
            l1.rpc.plugin_start(PLUGIN_PATH, **dict(fixed, **options))
        assert "disabled itself at init" in refused.value.error["message"]
        assert why in refused.value.error["message"]
        assert not plugin_answers(l1)
    l1.rpc.plugin_start(PLUGIN_PATH, **fixed)                          # good options: it runs
    assert wait_running(l1)["dry_run"] is False
    assert l1.rpc.getinfo()["id"]
    assert_no_broken_logs([l1])


def test_setconfig_policy_and_report_on_a_routing_node(node_factory):
    """Issue 9's operator calls through real lightningd: setconfig of a dynamic option (a
    number, as lightning-cli sends it) and a refused value, a peer policy that fixes a fee,
    and revenue-report's earnings matching the node's own listforwards."""
    l1, l2, l3, l4, scids = routing_node(node_factory, {"plugin": PLUGIN_PATH, "revenue-ops-dry-run": "false"})
    wait_running(l2)
    for i, payee in enumerate((l3, l4, l3)):
        pay(l1, payee, 60_000_000, f"paid-{i}")
    forwarded = len(settled_forwards(l2))
    wait_for(lambda: status(l2)["database"]["forwards_rows"] == forwarded)

    # setconfig: taken at once, shown in status; a bad value refused, the old one stays
    l2.rpc.setconfig("revenue-ops-max-fee-ppm", 1800)
    assert status(l2)["options"]["revenue-ops-max-fee-ppm"] == 1800
    with pytest.raises(RpcError, match="revenue-ops-max-fee-ppm"):
        l2.rpc.setconfig("revenue-ops-max-fee-ppm", "lots")
    with pytest.raises(RpcError):
        l2.rpc.setconfig("revenue-ops-db-path", "/tmp/elsewhere.db")     # start-up only
    assert status(l2)["options"]["revenue-ops-max-fee-ppm"] == 1800

    # a static policy on l3's peer: its fee is set and the others stay the plugin's
    peer = l3.info["id"]
    l2.rpc.call("revenue-policy", {"action": "set", "peer_id": peer, "strategy": "static", "fee_ppm": 777})
    assert l2.rpc.call("revenue-policy", {"action": "get", "peer_id": peer})["strategy"] == "static"
    l2.rpc.call("revenue-adjust-fees")
    assert local_fees_ppm(l2)[scids["l3"]] == 777
    with pytest.raises(RpcError, match="peer_id"):
        l2.rpc.call("revenue-policy", {"action": "set", "peer_id": "02" + "00" * 32, "strategy": "passive"})

    # max-HTLC (off by default) turned on at runtime: what lightningd then advertises for
    # each channel is what the plugin decided, never above what the channel can forward
    l2.rpc.setconfig("revenue-ops-manage-htlc-max", True)
    decided = {d["short_channel_id"]: d for d in l2.rpc.call("revenue-adjust-fees")["decisions"]}
    sent = {s: d["new_htlc_max_msat"] for s, d in decided.items() if d.get("new_htlc_max_msat") is not None}
    assert sent, decided           # l2's side of l1's channel holds only what was paid through it
    for c in l2.rpc.listpeerchannels()["channels"]:
        scid = c["short_channel_id"]
        if scid in sent:
            assert c["updates"]["local"]["htlc_maximum_msat"] == sent[scid]
            assert c["updates"]["local"]["htlc_minimum_msat"] <= sent[scid] <= c["total_msat"]

    # the report's earnings are the node's own: the fees of the settled forwards, per channel
    earned = {}
    for f in l2.rpc.listforwards(status="settled")["forwards"]:
        earned[f["out_channel"]] = earned.get(f["out_channel"], 0) + f["fee_msat"]
    report = l2.rpc.call("revenue-report", {"days": 1})
    shown = {r["short_channel_id"]: r["earned_msat"] for r in report["channels"]}
    assert {s: shown.get(s, 0) for s in earned} == earned and report["totals"]["earned_msat"] == sum(earned.values())
    assert_no_broken_logs([l1, l2, l3, l4])


def test_the_network_prior_reads_real_gossip(node_factory):
    """Issue 21 on real lightningd: listchannels destination=<peer> as the plugin reads it.
    l4 opens a channel into l3 too; of what gossip lists into l3, l2's own channel is left
    out and l4's is counted (one channel: shown, too few to be used as a prior)."""
    l1, l2, l3, l4, scids = routing_node(node_factory, {})
    bitcoind = l1.bitcoin
    l4.rpc.connect(l3.info["id"], "localhost", l3.port)
    bitcoind.rpc.sendtoaddress(l4.rpc.newaddr("bech32")["bech32"], (CHANNEL_SATS + 100_000) / 10**8)
    bitcoind.generate_block(1)
    sync_blockheight(bitcoind, [l1, l2, l3, l4])
    txid = l4.rpc.fundchannel(l3.info["id"], CHANNEL_SATS)["txid"]
    bitcoind.generate_block(6, wait_for_mempool=[txid])

    def into_l3():
        return l2.rpc.listchannels(destination=l3.info["id"])["channels"]

    wait_for(lambda: any(c["source"] == l4.info["id"] and c["active"] for c in into_l3()))
    listed = into_l3()
    assert l2.info["id"] in {c["source"] for c in listed}          # ours is there: it must be left out
    others = [c for c in listed if c["source"] != l2.info["id"] and c["active"]]
    assert len(others) == 1

    # started now, so its first read sees the gossip above (a summary is kept for 6 h)
    l2.rpc.plugin_start(PLUGIN_PATH, **{"revenue-ops-dry-run": "false"})
    wait_running(l2)
    l2.rpc.call("revenue-adjust-fees")
    rows = {c["short_channel_id"]: c for c in l2.rpc.call("revenue-fees")["channels"]}
    prior = rows[scids["l3"]]["network_prior"]
    assert prior["channels"] == 1 and prior["median_fee_ppm"] == others[0]["fee_per_millionth"]
    assert prior["used"] is False                                   # fewer than 3 channels
    assert rows[scids["l1"]]["network_prior"]["channels"] == 0      # only l2's own into l1
    assert status(l2)["phase"] == "running"
    assert not l2.daemon.is_in_log(r"Network fees: reading gossip failed")
    assert_no_broken_logs([l1, l2, l3, l4])
