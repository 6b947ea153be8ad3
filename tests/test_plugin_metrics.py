"""The Prometheus endpoint (revenue-ops-metrics-port), end to end: the real plugin on the
simulated node is scraped over HTTP, and what it serves is what revenue-status,
revenue-analyze and revenue-fees report."""
import json
import os
import re
import socket
import sqlite3
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from plugin_harness import db_path, start_plugin
from simnode import SimNode
from test_plugin_rebalance import BUDGET, build_market

DASHBOARD = os.path.join(ROOT, "dashboards", "cl-revenue-ops.json")
QUIET = {"revenue-ops-rebalance-watch-interval-seconds": 3600}   # no node call unless asked


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        sim.ids = build_market(sim)
        sim.set_plugin_loaded("sling", True)
        yield sim


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_with_metrics(node, port=None, **options):
    port = port or free_port()
    opts = dict(BUDGET, **QUIET)
    opts.update(options)
    plugin = start_plugin(node, **{"revenue-ops-metrics-port": port}, **opts)
    deadline = time.time() + 10
    while time.time() < deadline:
        metrics = plugin.call("revenue-status")["metrics"]
        if metrics["listening"] or metrics["error"]:
            break
        time.sleep(0.05)
    return plugin, port


def scrape(port, host="127.0.0.1"):
    """{(sample name, frozenset of labels): value} and the metric families' types by name."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def listening_sockets(pid):
    """(address, port) of every TCP socket the process listens on, read from /proc (Linux)."""
    if not os.path.isdir(f"/proc/{pid}/fd"):
        pytest.skip("needs Linux /proc to see the plugin's sockets")
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            match = re.match(r"socket:\[(\d+)\]$", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if match:
            inodes.add(match.group(1))
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        if not os.path.exists(f"/proc/net/{table}"):
            continue
        with open(f"/proc/net/{table}") as f:
            for line in list(f)[1:]:
                fields = line.split()
                address_hex, port_hex = fields[1].split(":")
                if fields[3] != "0A" or fields[9] not in inodes:   # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address_hex)   # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return sorted(found)


def channel_values(samples, name, **labels):
    """{scid: value} of one per-channel metric."""
    found = {}
    for (sample, sample_labels), value in samples.items():
        found_labels = dict(sample_labels)
        if sample == name and all(found_labels.get(k) == v for k, v in labels.items()):
            found[found_labels["scid"]] = value
    return found


def one(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def stored(node, sql):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def test_a_scrape_serves_what_the_plugin_reports_and_calls_nothing(node):
    plugin, port = start_with_metrics(node)
    analyzed = {f["short_channel_id"]: f for f in plugin.call("revenue-analyze")["channels"]}
    plugin.call("revenue-adjust-fees")
    calls_before = len(node.calls)
    samples, types = scrape(port)
    samples_again, _ = scrape(port)
    assert len(node.calls) == calls_before            # a scrape asks neither lightningd nor sling
    fees = {c["short_channel_id"]: c for c in plugin.call("revenue-fees")["channels"]}
    status = plugin.call("revenue-status")
    assert status["metrics"] == {"enabled": True, "url": f"http://127.0.0.1:{port}/metrics",
                                 "listening": True, "error": None, "scrapes": 2, "last_problem": None}
    assert one(samples, "revenue_ops_scrape_problem") == 0
    assert one(samples, "revenue_ops_info", version=status["version"]) == 1
    assert one(samples, "revenue_ops_phase", phase="running") == 1
    assert one(samples, "revenue_ops_phase", phase="hydrating") == 0
    assert one(samples, "revenue_ops_sling_loaded") == 1 and one(samples, "revenue_ops_dry_run") == 0

    # per channel: the fee in force right after the cycle set it, as the node reports it
    assert channel_values(samples, "revenue_ops_channel_fee_ppm") == {s: c["fee_ppm"] for s, c in fees.items()}
    changed = [d for d in plugin.call("revenue-fees")["channels"]
               if d["last_decision"] and d["last_decision"]["applied"]]
    assert changed                                       # the cycle did set fees: the gauge followed
    ratios = channel_values(samples, "revenue_ops_channel_local_ratio")
    assert set(ratios) == set(fees)
    for scid, c in fees.items():
        assert ratios[scid] == pytest.approx(c["local_ratio"], abs=5e-4)
        peer = {"scid": scid, "peer_id": c["peer_id"]}
        assert one(samples, "revenue_ops_channel_flow_state", state=analyzed[scid]["state"], **peer) == 1
        assert sum(v for (n, ls), v in samples.items()
                   if n == "revenue_ops_channel_flow_state" and ("scid", scid) in ls) == 1
    assert channel_values(samples, "revenue_ops_channel_fees_earned_window_msat") == \
        {s: f["fees_earned_msat"] for s, f in analyzed.items()}
    # the counter covers every stored forward, not only the window
    earned = dict(stored(node, "SELECT out_channel, SUM(fee_msat) FROM forwards GROUP BY out_channel"))
    assert channel_values(samples, "revenue_ops_channel_fees_earned_msat_total") == \
        {s: earned.get(s, 0) for s in fees}
    assert types["revenue_ops_channel_fees_earned_msat"] == "counter"

    # per loop, hydration, budget: as revenue-status says
    for name, loop in status["loops"].items():
        assert one(samples, "revenue_ops_loop_runs_total", loop=name) == loop["runs"]
        assert one(samples, "revenue_ops_loop_errors_total", loop=name) == loop["errors"]
        if loop["last_duration_seconds"] is not None:
            assert one(samples, "revenue_ops_loop_last_duration_seconds", loop=name) == \
                pytest.approx(loop["last_duration_seconds"], abs=1e-4)
    assert one(samples, "revenue_ops_loop_runs_total", loop="fee") == 1
    assert one(samples, "revenue_ops_forwards_stored_rows") == status["database"]["forwards_rows"] == \
        stored(node, "SELECT COUNT(*) FROM forwards")[0][0]
    assert one(samples, "revenue_ops_hydration_rows_added") == status["database"]["hydration"]["rows_added"]
    budget = status["rebalancing"]["budget"]
    assert one(samples, "revenue_ops_budget_limit_sats") == budget["limit_sats"] == 5000
    assert one(samples, "revenue_ops_budget_spent_24h_sats") == budget["spent_24h_sats"] == 0
    assert one(samples, "revenue_ops_budget_reserved_sats") == budget["reserved_sats"] == 0


def test_rebalance_spend_and_new_revenue_show_at_the_next_scrape(node):
    plugin, port = start_with_metrics(node)
    plugin.call("revenue-analyze")
    d, s1, e = node.ids["D"], node.ids["S1"], node.ids["E"]
    plugin.call("revenue-rebalance", {"scid": d})
    samples, _ = scrape(port)
    budget = plugin.call("revenue-status")["rebalancing"]["budget"]
    assert one(samples, "revenue_ops_budget_reserved_sats") == budget["reserved_sats"] > 0
    assert one(samples, "revenue_ops_rebalance_jobs_running") == 1
    for _ in range(60):
        node.sling.step()
    plugin.call("revenue-rebalance")                     # the pass watches first: the job ends
    samples, _ = scrape(port)
    status = plugin.call("revenue-status")["rebalancing"]
    job = status["recent_jobs"][0]
    assert job["scid"] == d and job["status"] == "done" and job["fee_paid_msat"] > 0
    assert channel_values(samples, "revenue_ops_channel_rebalance_fees_paid_msat_total")[d] == job["fee_paid_msat"]
    assert channel_values(samples, "revenue_ops_channel_rebalanced_msat_total")[d] == job["moved_msat"]
    assert channel_values(samples, "revenue_ops_channel_rebalance_fees_paid_msat_total")[s1] == 0
    assert one(samples, "revenue_ops_budget_spent_24h_sats") == status["budget"]["spent_24h_sats"] > 0
    assert one(samples, "revenue_ops_budget_reserved_sats") == 0
    assert one(samples, "revenue_ops_rebalance_jobs_running") == 0

    before = channel_values(samples, "revenue_ops_channel_fees_earned_msat_total")[e]
    rows = one(samples, "revenue_ops_forwards_stored_rows")
    created = node.add_forward(s1, e, out_msat=20_000_000, fee_msat=1_234, received_time=time.time() - 1,
                               resolved_time=time.time())
    node.emit_forward(plugin, created)
    deadline = time.time() + 10
    while time.time() < deadline and stored(node, "SELECT COUNT(*) FROM forwards")[0][0] <= rows:
        time.sleep(0.05)
    samples, _ = scrape(port)
    assert channel_values(samples, "revenue_ops_channel_fees_earned_msat_total")[e] == before + 1_234
    assert one(samples, "revenue_ops_forwards_stored_rows") == rows + 1


def test_metrics_are_off_by_default_and_nothing_listens(node):
    plugin = start_plugin(node)
    assert plugin.call("revenue-status")["metrics"] == {"enabled": False}
    assert listening_sockets(plugin.pid) == []


@pytest.mark.parametrize("port", [80, 1023, 65536, -1, "abc", "9100x"])
def test_a_bad_port_is_refused_with_a_message(node, port):
    plugin = start_plugin(node, **{"revenue-ops-metrics-port": port})
    assert plugin.disabled is not None and "revenue-ops-metrics-port" in plugin.disabled
    assert ("expected 0 (off) or an int from 1024 to 65535" in plugin.disabled
            or "expected int from 0 to 65535" in plugin.disabled)


def test_the_endpoint_listens_on_loopback_only(node):
    plugin, port = start_with_metrics(node)
    assert listening_sockets(plugin.pid) == [("127.0.0.1", port)]
    scrape(port)
    with pytest.raises(OSError):   # another loopback address: refused, as any outside address
        socket.create_connection(("127.0.0.2", port), timeout=2).close()
    assert plugin.shutdown() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_port_in_use_leaves_the_plugin_running_without_metrics(node):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plugin, _ = start_with_metrics(node, port=port)
        plugin.wait_for_log(rf"^Metrics off: cannot listen on 127\.0\.0\.1:{port}: ")
        metrics = plugin.call("revenue-status")["metrics"]
        assert metrics["listening"] is False and f"127.0.0.1:{port}" in metrics["error"]
        assert plugin.call("revenue-analyze")["channels"]     # the plugin works on
        assert plugin.alive


def test_without_prometheus_client_the_plugin_loads_unless_metrics_are_asked_for(node, tmp_path):
    shadow = tmp_path / "shadow"
    (shadow / "prometheus_client").mkdir(parents=True)
    (shadow / "prometheus_client" / "__init__.py").write_text(
        "raise ImportError('No module named prometheus_client (hidden by the test)')\n")
    env = {"PYTHONPATH": str(shadow)}
    plugin = node.start_plugin(os.path.join(ROOT, "cl-revenue-ops.py"), env=env)
    assert plugin.disabled is None
    assert plugin.call("revenue-status")["metrics"] == {"enabled": False}
    assert plugin.shutdown() == 0
    plugin = node.start_plugin(os.path.join(ROOT, "cl-revenue-ops.py"),
                               options={"revenue-ops-metrics-port": free_port()}, env=env)
    assert plugin.disabled is not None
    assert "prometheus-client" in plugin.disabled and "revenue-ops-metrics-port" in plugin.disabled


def test_a_lost_database_is_reported_and_the_rest_still_served(node):
    node.set_plugin_loaded("sling", False)   # revenue-status then answers without the database
    plugin, port = start_with_metrics(node)
    plugin.call("revenue-analyze")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path(node) + suffix):
            os.remove(db_path(node) + suffix)
    samples, _ = scrape(port)
    assert one(samples, "revenue_ops_scrape_problem") == 1
    assert one(samples, "revenue_ops_database_problem") == 1
    assert channel_values(samples, "revenue_ops_channel_fee_ppm")   # kept state is still served
    assert one(samples, "revenue_ops_loop_runs_total", loop="flow") >= 1
    assert "database" in plugin.call("revenue-status")["metrics"]["last_problem"]


def test_the_dashboard_queries_only_metrics_the_plugin_serves(node):
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    titles = " | ".join(p["title"] for p in panels).lower()
    for wanted in ("revenue per day", "fee", "local ratio", "rebalance", "budget", "loop"):
        assert wanted in titles
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    exprs += [v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
              for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for p in panels:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
    used = {m for e in exprs for m in re.findall(r"\brevenue_ops_[a-z0-9_]+", e)}
    assert len(used) >= 10

    plugin, port = start_with_metrics(node)
    plugin.call("revenue-analyze")
    plugin.call("revenue-rebalance", {"scid": node.ids["D"]})
    plugin.call("revenue-adjust-fees")
    served = {name for name, _ in scrape(port)[0]}
    assert sorted(used - served) == []
