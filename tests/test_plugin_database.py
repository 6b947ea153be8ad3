"""The real plugin process and its database file: refusals at start-up, storage faults, deletion."""
import os
import sqlite3
import time

import pytest

from conftest import PLUGIN_PATH
from modules.database import MIGRATIONS, Database
from modules.db_file import FAULTS_ENV
from plugin_harness import (FAST_LOOPS, db_path, node_rpc, settled_in_node, start_plugin,
                            stored_forward_keys, wait_for_phase)
from simnode import SimNode, SimRpcError
from test_database_file import file_bytes, lightningd_like, mode_of
from test_plugin_rebalance import BUDGET, build_market

NOW = time.time()


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        for _ in range(4):
            sim.add_channel(capacity_sats=2_000_000, local_sats=1_000_000)
        sim.generate_history(300, start_time=NOW - 86400, end_time=NOW - 600, seed=11)
        yield sim


def start_with_faults(node, faults_file, **options):
    """The plugin with its test-only storage fault switch: the words in faults_file."""
    opts = dict(FAST_LOOPS, **options)
    plugin = node.start_plugin(PLUGIN_PATH, options=opts, env={FAULTS_ENV: faults_file})
    wait_for_phase(plugin, "running")
    return plugin


def set_faults(path, *kinds):
    with open(path, "w") as f:
        f.write(" ".join(kinds))


def wait_until(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def add_forwards(node, n):
    channels = [c["short_channel_id"] for c in node_rpc(node).listpeerchannels()["channels"]]
    return [node.add_forward(channels[i % 2], channels[2 + i % 2], out_msat=2_000_000 + i, fee_msat=200)
            for i in range(n)]


def test_a_database_newer_than_the_plugin_makes_it_step_aside_untouched(node):
    path = db_path(node)
    db = Database(path)
    db.migrate()
    db._conn().execute(f"PRAGMA user_version = {len(MIGRATIONS) + 4}")
    db.close()
    before = file_bytes(path)
    plugin = start_plugin(node)
    assert plugin.disabled == (
        f"cl-revenue-ops: refusing database {path}: its schema version {len(MIGRATIONS) + 4} is newer than"
        f" this cl-revenue-ops knows ({len(MIGRATIONS)}): a newer release wrote it; run that release or"
        " point revenue-ops-db-path at another file; nothing was written to it")
    assert file_bytes(path) == before
    assert node_rpc(node).getinfo()["id"]            # lightningd runs on


def test_lightningds_own_database_given_by_mistake_is_refused_byte_for_byte(node):
    path = os.path.join(node.lightning_dir, "lightningd.sqlite3")
    lightningd_like(path)
    before = file_bytes(path)
    plugin = start_plugin(node, **{"revenue-ops-db-path": path})
    assert plugin.disabled is not None
    assert f"refusing database {path}: it is another program's database" in plugin.disabled
    assert "channels, outputs, peers, shachains, vars, version" in plugin.disabled
    assert file_bytes(path) == before
    assert not os.path.exists(path + "-wal") and not os.path.exists(path + "-shm")
    assert not os.path.exists(db_path(node))         # nor did it start one elsewhere


def test_a_new_database_and_its_directory_are_private(node):
    path = os.path.join(node.lightning_dir, "revenue", "ops.db")
    plugin = start_plugin(node, **{"revenue-ops-db-path": path})
    assert plugin.call("revenue-status")["database"]["problem"] is None
    assert mode_of(os.path.dirname(path)) == 0o700
    for name in (path, path + "-wal", path + "-shm"):
        assert mode_of(name) == 0o600, name


def test_a_read_only_spell_fails_the_cycles_then_they_store_again_without_a_restart(node, tmp_path):
    faults = str(tmp_path / "faults")
    plugin = start_with_faults(node, faults, **{"revenue-ops-dry-run": True,
                                                "revenue-ops-rebalance-watch-interval-seconds": 2})
    stored = len(settled_in_node(node))
    assert plugin.call("revenue-status")["database"]["forwards_rows"] == stored
    plugin.call("revenue-adjust-fees")

    set_faults(faults, "readonly")
    spell = add_forwards(node, 5)
    node.emit_forward(plugin, spell[0])              # the live event cannot be stored either
    assert plugin.wait_for_log("Database: storage fault .attempt to write a readonly database")
    with pytest.raises(SimRpcError, match="the flow cycle failed: OperationalError: attempt to write a readonly"):
        plugin.call("revenue-analyze")
    with pytest.raises(SimRpcError, match="the fee cycle failed: OperationalError: attempt to write a readonly"):
        plugin.call("revenue-adjust-fees")
    status = plugin.call("revenue-status")
    assert "attempt to write a readonly database" in status["database"]["problem"]
    assert status["database"]["forwards_rows"] == stored
    assert status["loops"]["flow"]["errors"] == 1 and status["loops"]["fee"]["errors"] == 1

    set_faults(faults)                               # writable again; the plugin was not restarted
    plugin.call("revenue-analyze")                   # the flow loop stores what it missed
    assert plugin.call("revenue-adjust-fees")["cycle"]["channels"] == 4
    after = add_forwards(node, 1)
    node.emit_forward(plugin, after[0])
    assert wait_until(lambda: len(stored_forward_keys(node)) == stored + 6)
    assert set(stored_forward_keys(node)) == settled_in_node(node)
    status = plugin.call("revenue-status")
    assert status["database"]["problem"] is None
    assert status["database"]["forwards_rows"] == stored + 6
    assert status["loops"]["flow"]["last_error"] is None and status["loops"]["fee"]["last_error"] is None
    assert status["loops"]["jobs"]["last_error"] is None
    plugin.wait_for_log("Database: writes succeed again")
    assert plugin.shutdown() == 0


def test_a_database_deleted_while_running_is_reported_and_never_recreated(node):
    plugin = start_plugin(node)
    path = db_path(node)
    for name in (path, path + "-wal", path + "-shm"):
        os.remove(name)
    status = plugin.call("revenue-status")
    assert status["database"]["problem"] == (
        f"the database file {path} was deleted while cl-revenue-ops ran; writes are refused until"
        " the plugin is restarted")
    assert status["database"]["forwards_rows"] is None
    with pytest.raises(SimRpcError, match="DatabaseGone: the database file .* was deleted"):
        plugin.call("revenue-analyze")
    with pytest.raises(SimRpcError, match="was deleted"):
        plugin.call("revenue-fees")
    created = add_forwards(node, 1)
    node.emit_forward(plugin, created[0])
    plugin.call("revenue-status")
    assert not os.path.exists(path)                  # no thread made a new, empty one
    assert len([m for _, m in plugin.logs if "was deleted while" in m and m.startswith("Database:")]) == 1
    assert plugin.shutdown() == 0
    assert not os.path.exists(path)


def test_a_database_replaced_while_running_is_left_alone(node, tmp_path):
    plugin = start_plugin(node)
    path = db_path(node)
    other = Database(str(tmp_path / "backup.db"))
    other.migrate()
    other.close()
    os.replace(str(tmp_path / "backup.db"), path)
    before = file_bytes(path)
    assert "was replaced by another file" in plugin.call("revenue-status")["database"]["problem"]
    with pytest.raises(SimRpcError, match="was replaced by another file"):
        plugin.call("revenue-adjust-fees")
    assert file_bytes(path) == before
    assert plugin.shutdown() == 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:   # still the backup, empty
        assert conn.execute("SELECT COUNT(*) FROM forwards").fetchone()[0] == 0


def test_when_the_database_is_gone_our_running_sling_jobs_are_stopped(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        ids = build_market(sim)
        sim.set_plugin_loaded("sling", True)
        plugin = start_plugin(sim, **dict(BUDGET, **{"revenue-ops-rebalance-watch-interval-seconds": 2}))
        plugin.call("revenue-analyze")
        assert plugin.call("revenue-rebalance", {"scid": ids["D"]})["decision"]["start"] is True
        assert sim.sling.state_of(ids["D"]) != ["Stopped"]
        os.remove(db_path(sim))
        plugin.wait_for_log("Database gone: stopped 1 sling jobs; rebalancing waits for a restart")
        assert set(sim.sling.state_of(ids["D"])) == {"Stopped"}
        with pytest.raises(SimRpcError, match="was deleted"):
            plugin.call("revenue-rebalance", {"scid": ids["D"]})
        status = plugin.call("revenue-status")     # still answers, sling loaded or not
        assert status["sling"]["loaded"] is True and status["sling"]["jobs"] is None
        assert "was deleted" in status["database"]["problem"]
        assert plugin.shutdown() == 0
