"""The daily budget as a hard limit, end to end: the real plugin, the simulated sling.

A fast sling, concurrent manual and automatic passes and random RPC faults never make the
fees paid pass the budget; a transient stats error does not charge a job in full; sling
loaded later (or restarted) is cleaned up within one watch interval; revenue-status
answers while sling hangs; a lost database does not let the day's budget be spent twice.
"""
import os
import random
import sqlite3
import threading
import time

import pytest

from plugin_harness import db_path, node_rpc, start_plugin
from simnode import SimNode, SimRpcError
from test_plugin_rebalance import BUDGET, add_seller, build_market, job_rows, sling_jobs, wait_until

WATCH = {"revenue-ops-rebalance-watch-interval-seconds": 2}


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        sim.ids = build_market(sim)
        sim.set_plugin_loaded("sling", True)
        yield sim


def ready(node, **options):
    plugin = start_plugin(node, **dict(BUDGET, **WATCH, **options))
    plugin.call("revenue-analyze")
    return plugin


def paid_msat(node, since=0.0):
    """What the simulated sling really paid in fees (it debits amount + fee per success)."""
    with node.state.lock:
        return sum(r["amount_msat"] * r["fee_ppm"] // 1_000_000 for rows in node.sling.successes.values()
                   for r in rows if r["completed_at"] >= since)


def ledger_msat(node, now):
    """(spent in the last 24 h, reserved) as the plugin's database holds them."""
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True, timeout=10) as conn:
        spent = conn.execute("SELECT COALESCE(SUM(spent_msat), 0) FROM budget_ledger WHERE reconciled_at > ?",
                             (now - 86400,)).fetchone()[0]
        reserved = conn.execute("SELECT COALESCE(SUM(reserved_msat), 0) FROM budget_ledger"
                                " WHERE reconciled_at IS NULL").fetchone()[0]
    return spent, reserved


def open_jobs(node):
    return [r for r in job_rows(node) if r[0] in ("starting", "running")]


# --- the stress test ----------------------------------------------------------------------
def test_a_fast_sling_concurrent_passes_and_random_faults_never_pass_the_budget(tmp_path):
    budget_sats = 6000
    rng = random.Random(8)
    with SimNode(str(tmp_path)) as sim:
        ids = build_market(sim)
        ids["S3"] = sim.add_channel(capacity_sats=10_000_000, local_sats=9_500_000, fee_ppm=50)
        for name in ("D2", "D3", "D4"):
            add_seller(sim, ids, name, sources=("S1", "S2", "S3"))
        sim.set_plugin_loaded("sling", True)
        plugin = start_plugin(sim, **dict(BUDGET, **WATCH, **{
            "revenue-ops-daily-budget-sats": budget_sats,
            # jobs of 1 M sat while the destinations keep selling out (market below): a sling
            # job that ran to a balance target would pull again after every drain
            "revenue-ops-rebalance-max-amount-sats": 1_000_000,
            "revenue-ops-rebalance-interval-seconds": 10, "revenue-ops-loop-jitter-percent": 0,
            "revenue-ops-rpc-timeout-seconds": 3}))
        plugin.call("revenue-analyze")
        sim.sling.effective_ppm = 700
        sim.sling.payments_per_step = 5
        sim.sling.step_interval = 0           # pays as fast as it can, between any two checks
        stop = threading.Event()
        seen = {"max_committed": 0, "max_paid": 0, "started": 0, "refused": 0, "errors": 0}

        def market():                         # the destinations sell out, the sources fill up
            while not stop.wait(0.2):
                for name, local_sats in (("D", 1), ("D2", 1), ("D3", 1), ("D4", 1), ("S1", 9), ("S2", 9),
                                         ("S3", 9)):
                    sim.set_balance(ids[name], local_sats * 1_000_000_000)

        def faults():
            methods = ["sling-stats", "sling-stop", "sling-deletejob", "sling-once", "listpeerchannels",
                       "plugin", "listfunds"]
            while not stop.wait(0.3):
                method = rng.choice(methods)
                if rng.random() < 0.2:        # slower than the plugin waits: it cannot know
                    sim.fault(method, "hang", seconds=4, times=1)
                else:
                    sim.fault(method, "error", code=-32700, message="injected", times=rng.randint(1, 3))
                sim.sling.effective_ppm = rng.choice([100, 400, 700, 780, 900])   # near max ppm, or above

        def operator(scid):
            while not stop.is_set():
                try:
                    params = {"scid": scid, "force": True} if scid else {}
                    result = plugin.call("revenue-rebalance", params, timeout=30)
                    seen["started"] += len(result.get("started", []))
                except SimRpcError as e:
                    seen["refused" if "budget" in e.message else "errors"] += 1
                except TimeoutError:
                    seen["errors"] += 1
                stop.wait(random.uniform(0.3, 2))   # a pass also checks the jobs: not all the time

        def observe():
            while not stop.wait(0.05):
                spent, reserved = ledger_msat(sim, time.time())
                seen["max_committed"] = max(seen["max_committed"], spent + reserved)
                seen["max_paid"] = max(seen["max_paid"], paid_msat(sim))

        threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in
                   [(faults, ()), (observe, ()), (market, ()), (operator, (None,)), (operator, (ids["D"],)),
                    (operator, (ids["D2"],)), (operator, (ids["D3"],))]]
        for t in threads:
            t.start()
        time.sleep(15)
        stop.set()
        for t in threads:
            t.join(40)
        sim.clear_faults()
        time.sleep(5)                         # hangs under way end
        sim.sling.step_interval = None
        assert plugin.shutdown() == 0         # stops and reconciles every job
        assert open_jobs(sim) == []
        paid = paid_msat(sim)
        spent, reserved = ledger_msat(sim, time.time())
        assert seen["max_committed"] <= budget_sats * 1000            # the ledger never passed it
        assert paid <= budget_sats * 1000 and seen["max_paid"] <= budget_sats * 1000   # nor the money
        assert paid <= spent and reserved == 0                        # the ledger never under-counts
        # it did work hard against the limit
        assert len(job_rows(sim)) >= 4 and paid >= budget_sats * 1000 // 2, seen


# --- a transient stats error ----------------------------------------------------------------
def test_a_transient_sling_stats_error_does_not_charge_the_whole_reservation(node):
    plugin = ready(node)
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d, "amount_sats": 1_000_000})
    for _ in range(2):                        # two 2-second faults, as in the issue
        node.sling.step()
        node.fault("sling-stats", "error", code=-32700, message="stats file busy")
        time.sleep(2.5)
        node.clear_faults("sling-stats")
        time.sleep(0.5)
        assert job_rows(node)[0][0] == "running"        # its reservation held, not charged
    node.sling.payments_per_step = 20
    node.sling.step()
    assert wait_until(lambda: job_rows(node)[0][0] != "running")
    status, moved, fee, reserved, spent = job_rows(node)[0]
    assert status == "done" and moved == 1_000_000_000
    assert paid_msat(node) <= spent <= paid_msat(node) + 2000 and spent < reserved // 2
    assert plugin.wait_for_log("sling's stats could not be read .*its reservation holds")


def test_stats_that_stay_unreadable_charge_the_reservation_after_a_few_checks(node):
    plugin = ready(node)
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d})
    node.sling.step()
    node.fault("sling-stats", "error", code=-32700, message="stats unavailable")
    assert wait_until(lambda: job_rows(node)[0][0] != "running")
    status, moved, fee, reserved, spent = job_rows(node)[0]
    assert status == "blind" and spent == reserved
    assert node.calls_of("sling-stop")[-1] in ({"scid": d}, [d])
    node.clear_faults()
    assert d not in sling_jobs(node)
    assert len([r for r in plugin.logs if "its reservation holds" in r[1]]) >= 3
    report = plugin.call("revenue-report", {"id": d})      # its cost is said to be unknown
    assert report["channels"][0]["rebalance_jobs_cost_unknown"] == 1
    assert report["channels"][0]["rebalance_fee_msat"] == fee and any("could not be read" in n for n in report["notes"])


# --- sling loaded after the plugin, or restarted ---------------------------------------------
def test_sling_loaded_later_is_cleaned_up_within_one_watch_interval(node):
    node.set_plugin_loaded("sling", False)
    s1, s2, e = node.ids["S1"], node.ids["S2"], node.ids["E"]
    node.sling.add_job(s1, "pull", amount=100_000, maxppm=300, outppm=0)           # left by someone
    node.sling.rpc_go([])
    node.sling.rpc_once({"scid": e, "direction": "pull", "amount": 100_000, "maxppm": 300,
                         "onceamount": 500_000, "candidates": [s2]})                 # paying for no one
    plugin = ready(node)
    assert plugin.call("revenue-status")["sling"]["loaded"] is False
    since = len(plugin.logs)
    node.set_plugin_loaded("sling", True)
    # the job watch (every 2 s here) notices sling, not the next rebalance pass (a day away)
    plugin.wait_for_log(r"^Startup Hygiene: Terminated 2 orphan sling jobs\.$", timeout=8, since=since)
    assert sling_jobs(node) == set() and node_rpc(node).call("sling-jobsettings") == {}
    assert wait_until(lambda: plugin.call("revenue-status")["sling"]["rebalancing"] == "enabled")
    assert plugin.call("revenue-rebalance", {"scid": node.ids["D"]})["decision"]["start"] is True


def test_a_sling_restart_is_noticed_and_the_job_it_forgot_reconciled(node):
    plugin = ready(node)
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d})
    node.sling.step()
    node.sling.step()
    paid = paid_msat(node)
    node.set_plugin_loaded("sling", False)          # sling dies: its once-jobs go with it
    with node.state.lock:
        node.sling.tasks.pop(d)
        node.sling.once.pop(d)
    time.sleep(2.5)
    assert job_rows(node)[0][0] == "running"        # without sling: kept open, reservation held
    node.sling.add_job(node.ids["S1"], "pull", amount=100_000, maxppm=300, outppm=0)
    node.sling.rpc_go([])                            # sling-autogo starts an old job
    node.set_plugin_loaded("sling", True)
    assert wait_until(lambda: job_rows(node)[0][0] != "running", timeout=10)
    status, moved, fee, reserved, spent = job_rows(node)[0]
    assert status == "stopped" and moved == 200_000_000
    assert paid <= spent < reserved
    assert sling_jobs(node) == set()


def test_a_sling_job_the_plugin_did_not_start_is_stopped_while_ours_run(node):
    plugin = ready(node)
    plugin.call("revenue-rebalance", {"scid": node.ids["D"]})
    e = node.ids["E"]
    node_rpc(node).call("sling-job", {"scid": e, "direction": "pull", "amount": 100_000, "maxppm": 300,
                                      "candidates": [node.ids["S2"]]})
    node_rpc(node).call("sling-go", {"scid": e})
    assert wait_until(lambda: e not in sling_jobs(node), timeout=10)
    plugin.wait_for_log(f"sling was running a job on {e} the plugin did not start")
    assert sling_jobs(node) == {node.ids["D"]}


# --- revenue-status while sling hangs -----------------------------------------------------------
def test_status_answers_within_a_second_while_sling_hangs(node):
    plugin = ready(node)
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d})
    node.set_plugin_loaded("sling", False)
    time.sleep(2.5)
    for method in ("sling-jobsettings", "sling-stats"):
        node.fault(method, "hang", seconds=6)
    node.clear_calls()
    node.set_plugin_loaded("sling", True)           # sling comes back: hygiene hangs on jobsettings

    def manual_pass():
        try:
            plugin.call("revenue-rebalance", {}, timeout=20)
        except (SimRpcError, TimeoutError):
            pass
    threading.Thread(target=manual_pass, daemon=True).start()
    assert wait_until(lambda: node.calls_of("sling-jobsettings"), timeout=5)   # the hang is under way
    for _ in range(3):
        status = plugin.call("revenue-status", timeout=1)
        assert status["sling"]["loaded"] is True
        assert [j["scid"] for j in status["rebalancing"]["active_jobs"]] == [d]
    node.clear_faults()   # the calls under way still hang their 6 s


# --- a lost database ------------------------------------------------------------------------
def remove_database(node):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path(node) + suffix):
            os.remove(db_path(node) + suffix)


def test_a_deleted_database_does_not_let_the_budget_be_spent_twice(node):
    plugin = ready(node)
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d, "amount_sats": 4_000_000})
    node.sling.payments_per_step = 50
    node.sling.step()
    assert wait_until(lambda: job_rows(node)[0][0] != "running")
    paid = paid_msat(node)
    assert paid == 400_000                             # 4 M sat at 100 ppm
    assert plugin.shutdown() == 0
    remove_database(node)
    # The day's budget was 400 sat, and it is spent: a new database must not spend it again.
    plugin = ready(node, **{"revenue-ops-daily-budget-sats": 400})
    plugin.wait_for_log(r"Budget ledger was empty: sling's stats show rebalances in the last 24 h")
    budget = plugin.call("revenue-status")["rebalancing"]["budget"]
    assert budget["spent_24h_sats"] == budget["counted_from_sling_stats_sats"] == 400
    assert budget["counted_from_sling_stats_until"] > time.time() + 86000
    add_seller(node, node.ids, "D2", sources=("S2",))
    plugin.call("revenue-analyze")
    with pytest.raises(SimRpcError, match="budget"):
        plugin.call("revenue-rebalance", {"scid": node.ids["D2"], "force": True})
    assert plugin.call("revenue-rebalance")["started"] == []
    assert paid_msat(node) == paid


def test_old_sling_history_does_not_block_a_fresh_database(node):
    d = node.ids["D"]
    node.sling.successes[d] = [{"amount_msat": 100_000_000, "fee_ppm": 500, "hops": 3,
                                "channel_partner": node.ids["S1"], "completed_at": int(time.time() - 3 * 86400)}]
    plugin = ready(node)
    plugin.wait_for_log(r"Budget ledger is empty and sling's stats show no rebalance in the last 24 h")
    assert plugin.call("revenue-status")["rebalancing"]["budget"]["spent_24h_sats"] == 0
    assert plugin.call("revenue-rebalance", {"scid": d})["decision"]["start"] is True


def test_sling_stats_that_cannot_say_count_the_whole_budget(node):
    # every channel's stats fail (sling's job listing answers): tried 3 times, then the limit
    node.fault("sling-stats", "error", code=-32700, message="stats unavailable",
               when=lambda params: isinstance(params, dict) and "scid" in params)
    plugin = ready(node)
    plugin.wait_for_log(r"Budget ledger was empty: sling's stats of \d+ channels could not be read", timeout=15)
    node.clear_faults()
    budget = plugin.call("revenue-status")["rebalancing"]["budget"]
    assert budget["spent_24h_sats"] == budget["limit_sats"] == budget["counted_from_sling_stats_sats"]
    with pytest.raises(SimRpcError, match="budget"):
        plugin.call("revenue-rebalance", {"scid": node.ids["D"]})
