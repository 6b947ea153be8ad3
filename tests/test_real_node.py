"""The plugin on real Core Lightning nodes (pyln-testing). Skipped when the lightningd and
bitcoind binaries are not on this machine, as in CI here: no registry we can use ships them."""
import shutil

import pytest

from conftest import PLUGIN_PATH

HAVE_BINARIES = bool(shutil.which("lightningd") and shutil.which("bitcoind"))
pytestmark = pytest.mark.skipif(not HAVE_BINARIES, reason="lightningd and bitcoind are not installed")

if HAVE_BINARIES:
    from pyln.testing.fixtures import *  # noqa: F401,F403  (node_factory and friends)


def test_the_plugin_starts_hydrates_and_reports_on_a_routing_node(node_factory):
    l1, l2, l3 = node_factory.line_graph(
        3, opts=[{}, {"plugin": PLUGIN_PATH, "revenue-ops-dry-run": True}, {}], wait_for_announce=True)
    for amount in (100_000, 200_000):
        invoice = l3.rpc.invoice(amount, f"inv{amount}", "test")["bolt11"]
        l1.rpc.pay(invoice)
    l2.daemon.wait_for_log("Startup Hygiene: Terminated 0 orphan sling jobs|sling plugin not loaded")
    analysis = l2.rpc.call("revenue-analyze")
    assert len(analysis["channels"]) == 2
    status = l2.rpc.call("revenue-status")
    assert status["database"]["forwards_rows"] == 2
    assert status["dry_run"] is True and status["phase"] == "running"


def test_a_bad_option_disables_the_plugin_and_lightningd_runs_on(node_factory):
    l1 = node_factory.get_node(options={"plugin": PLUGIN_PATH, "revenue-ops-flow-window-days": 0},
                               may_fail=True, allow_broken_log=True)
    l1.daemon.wait_for_log("revenue-ops-flow-window-days: 0 is out of range")
    assert l1.rpc.getinfo()["id"]
