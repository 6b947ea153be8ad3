"""Helpers for tests that run the real plugin process inside the simulated node."""
import os
import sqlite3
import time

from pyln.client import LightningRpc

from conftest import PLUGIN_PATH

FAST_LOOPS = {  # loops that never fire on their own during a test unless asked
    "revenue-ops-flow-interval-seconds": 86400,
    "revenue-ops-fee-interval-seconds": 86400,
    "revenue-ops-rebalance-interval-seconds": 86400,
}


def start_plugin(node, wait_running=True, **options):
    opts = dict(FAST_LOOPS)
    opts.update(options)
    plugin = node.start_plugin(PLUGIN_PATH, options=opts)
    if wait_running and plugin.disabled is None:
        wait_for_phase(plugin, "running")
    return plugin


def wait_for_phase(plugin, phase, timeout=60):
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        status = plugin.call("revenue-status")
        if status["phase"] == phase:
            return status
        time.sleep(0.05)
    raise TimeoutError(f"plugin never reached {phase}: {status}")


def db_path(node):
    return os.path.join(node.lightning_dir, "revenue_ops.db")


def stored_forward_keys(node):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT in_channel, in_htlc_id FROM forwards").fetchall()


def node_rpc(node):
    return LightningRpc(os.path.join(node.lightning_dir, "lightning-rpc"))


def settled_in_node(node):
    forwards = node_rpc(node).call("listforwards", {"status": "settled"})["forwards"]
    return {(f["in_channel"], f["in_htlc_id"]) for f in forwards}
