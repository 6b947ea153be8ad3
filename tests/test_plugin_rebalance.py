"""revenue-rebalance and the rebalance loop, end to end: the real plugin, the simulated sling."""
import json
import sqlite3
import time

import pytest

from plugin_harness import db_path, node_rpc, start_plugin
from simnode import SimNode, SimRpcError

NOW = time.time()
BUDGET = {"revenue-ops-daily-budget-sats": 5000, "revenue-ops-rebalance-chunk-sats": 100_000,
          "revenue-ops-rebalance-min-profit-sats": 10}


def add_seller(sim, ids, name, sources=("S1", "S2")):
    """A low channel that sold 14 M sat out over the last week (2 M sat/day) at 800 ppm."""
    ids[name] = sim.add_channel(capacity_sats=10_000_000, local_sats=1_000_000, fee_ppm=800)
    for i in range(140):
        t = NOW - 7 * 86400 + 3600 + i * 4000
        source = ids[sources[i % len(sources)]]
        sim.add_forward(source, ids[name], out_msat=100_000_000, fee_msat=80_000, received_time=t - 1,
                        resolved_time=t)


def build_market(sim):
    """D sells outbound at 800 ppm and is low; S1, S2 are full, cheap, and fill up (SINK)."""
    ids = {
        "S1": sim.add_channel(capacity_sats=10_000_000, local_sats=9_000_000, fee_ppm=50),
        "S2": sim.add_channel(capacity_sats=10_000_000, local_sats=9_000_000, fee_ppm=50),
        "E": sim.add_channel(capacity_sats=2_000_000, local_sats=100_000, fee_ppm=5),
    }
    add_seller(sim, ids, "D")
    sim.add_forward(ids["S1"], ids["E"], out_msat=10_000_000, fee_msat=50, received_time=NOW - 3600,
                    resolved_time=NOW - 3500)
    sim.funds_onchain_msat = 50_000_000_000
    sim.sling.effective_ppm = 100
    return ids


@pytest.fixture
def node(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        sim.ids = build_market(sim)
        sim.set_plugin_loaded("sling", True)
        yield sim


def ready(node, **options):
    opts = dict(BUDGET)
    opts.update(options)
    plugin = start_plugin(node, **opts)
    plugin.call("revenue-analyze")
    return plugin


def sling_jobs(node):
    """The channels on which sling runs a job or once-job that may still pay."""
    return {row["scid"] for row in node_rpc(node).call("sling-stats", {"json": True})
            if any(s.split(":", 1)[1] not in ("Stopped", "NotStarted", "Balanced") for s in row["status"])}


def ledger_rows(node):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT job_id, reserved_msat, spent_msat FROM budget_ledger").fetchall()


def test_a_profitable_destination_gets_a_sling_pull_job_with_safe_parameters(node):
    plugin = ready(node)
    d = node.ids["D"]
    result = plugin.call("revenue-rebalance", {"scid": d})
    decision = result["decision"]
    assert decision["start"] is True and decision["role"] == "destination"
    assert decision["target_msat"] == 5_000_000_000          # min(half of 10 M, 3 days of 2 M/day)
    assert decision["amount_msat"] == 4_000_000_000
    assert 100 <= decision["max_ppm"] <= 800                # pays at most what it earns
    assert decision["expected_profit_msat"] >= 10_000
    assert decision["expected_revenue_msat"] >= (decision["worst_cost_msat"] + decision["lost_earnings_msat"]
                                                 + decision["min_profit_msat"])
    once = node.calls_of("sling-once")[-1]
    assert once["scid"] == d and once["direction"] == "pull"
    assert once["amount"] == 100_000                          # the chunk
    assert once["onceamount"] == 4_000_000                    # sling itself stops at the amount
    assert once["maxppm"] == decision["max_ppm"]
    assert set(once["candidates"]) <= {node.ids["S1"], node.ids["S2"]} and once["candidates"]
    assert sling_jobs(node) == {d} and node.sling.state_of(d) == ["Starting"]
    status = plugin.call("revenue-status")["rebalancing"]
    assert [j["scid"] for j in status["active_jobs"]] == [d]
    assert status["budget"]["reserved_sats"] > 0
    assert status["budget"]["reserved_sats"] <= status["budget"]["limit_sats"]


def test_a_running_job_is_watched_ended_at_its_target_and_its_cost_reconciled(node):
    plugin = ready(node)
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d})
    for _ in range(60):
        node.sling.step()
    result = plugin.call("revenue-rebalance")                # the next pass watches first
    ended = [e for e in result["ended"] if e["scid"] == d]
    assert ended and ended[0]["status"] == "done"
    assert ended[0]["moved_sats"] >= 3_900_000
    assert ended[0]["fee_paid_sats"] == pytest.approx(ended[0]["moved_sats"] * 100 / 1e6, abs=2)
    assert d not in sling_jobs(node)
    budget = plugin.call("revenue-status")["rebalancing"]["budget"]
    assert budget["reserved_sats"] == 0
    # charged: the most sling's rounded-down figures can mean, never less than what was paid
    assert budget["spent_24h_sats"] == ended[0]["charged_sats"]
    paid_sats = sum(r["amount_msat"] * r["fee_ppm"] for r in node.sling.successes[d]) // 10**9
    assert ended[0]["fee_paid_sats"] <= paid_sats <= ended[0]["charged_sats"]   # sling's figure rounds down
    assert ended[0]["charged_sats"] <= paid_sats + ended[0]["moved_sats"] // 1_000_000 + 2   # 1 ppm of slack
    assert node.channel(d)["local_msat"] >= 4_900_000_000


def test_an_unprofitable_destination_gets_no_job_and_says_why(node):
    plugin = ready(node)
    e = node.ids["E"]
    decision = plugin.call("revenue-rebalance", {"scid": e})["decision"]
    assert decision["start"] is False
    assert any("min" in r and "profit" in r or "does not sell" in r for r in decision["reasons"])
    assert e not in sling_jobs(node)
    assert ledger_rows(node) == []


def test_the_futility_breaker_skips_a_failing_destination_and_readmits_it_later(node):
    plugin = ready(node)
    d = node.ids["D"]
    node.sling.unroutable.add(d)
    plugin.call("revenue-rebalance", {"scid": d})
    for _ in range(12):
        node.sling.step()
    ended = plugin.call("revenue-rebalance")["ended"]
    assert ended and ended[0]["status"] == "stopped_failing" and ended[0]["moved_sats"] == 0
    assert d not in sling_jobs(node)
    decision = plugin.call("revenue-rebalance", {"scid": d, "force": True})["decision"]
    assert decision["start"] is False and "Futility Circuit Breaker active." in decision["reasons"]
    plugin.wait_for_log(r"Futility Circuit Breaker active\.")
    assert d not in sling_jobs(node)
    assert plugin.shutdown() == 0
    with sqlite3.connect(db_path(node)) as conn:         # two days pass
        conn.execute("UPDATE channel_failures SET last_failure_time = last_failure_time - 49 * 3600")
    node.sling.unroutable.discard(d)
    plugin = ready(node)
    decision = plugin.call("revenue-rebalance", {"scid": d})["decision"]
    assert decision["start"] is True and "Futility Circuit Breaker active." not in decision["reasons"]


def test_the_budget_stops_a_second_job(node):
    add_seller(node, node.ids, "D2", sources=("S2",))
    plugin = ready(node, **{"revenue-ops-daily-budget-sats": 3300})
    d, d2 = node.ids["D"], node.ids["D2"]
    first = plugin.call("revenue-rebalance", {"scid": d})
    assert first["decision"]["start"] is True
    budget = plugin.call("revenue-status")["rebalancing"]["budget"]
    assert 0 < budget["reserved_sats"] <= 3300
    with pytest.raises(SimRpcError) as err:                  # just as worthwhile, but no budget left
        plugin.call("revenue-rebalance", {"scid": d2})
    assert "budget" in err.value.message
    second_pass = plugin.call("revenue-rebalance")           # the automatic pass holds back too
    assert second_pass["started"] == []
    skipped = [x for x in second_pass["decisions"] if x["short_channel_id"] == d2][0]
    assert any(r.startswith("budget") for r in skipped["reasons"])
    assert set(sling_jobs(node)) == {d}
    assert len(ledger_rows(node)) == 1


def test_dry_run_decides_and_records_but_starts_nothing(node):
    plugin = ready(node, **{"revenue-ops-dry-run": True})
    result = plugin.call("revenue-rebalance")
    assert result["dry_run"] is True
    assert [s["scid"] for s in result["started"]] == [node.ids["D"]]
    assert all(s["job_id"] is None for s in result["started"])
    assert sling_jobs(node) == set() and ledger_rows(node) == []
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM rebalance_decisions").fetchone()[0] >= 4


def test_shutdown_stops_the_jobs_we_started(node):
    plugin = ready(node)
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d})
    node.sling.step()
    assert d in sling_jobs(node)
    assert plugin.shutdown() == 0
    assert sling_jobs(node) == set()
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        status, moved = conn.execute("SELECT status, moved_msat FROM rebalance_jobs").fetchone()
    assert status == "stopped" and moved == 100_000_000
    assert ledger_rows(node)[0][2] is not None               # reconciled: the reservation is freed


def test_the_rebalance_loop_starts_jobs_on_its_own(node):
    plugin = ready(node, **{"revenue-ops-rebalance-interval-seconds": 10,
                            "revenue-ops-loop-jitter-percent": 0})
    deadline = time.time() + 30
    while time.time() < deadline and plugin.call("revenue-status")["loops"]["rebalance"]["runs"] < 1:
        time.sleep(0.2)
    loop = plugin.call("revenue-status")["loops"]["rebalance"]
    assert loop["runs"] >= 1 and loop["last_error"] is None
    assert loop["last_result"]["started"] == 1
    assert set(sling_jobs(node)) == {node.ids["D"]}


@pytest.mark.parametrize("params,code,message", [
    ({"scid": "999x9x9"}, -32602, "unknown channel 999x9x9"),
    ({"scid": "not-a-scid"}, -32602, "malformed short channel id"),
    ({"scid": "D", "amount_sats": 0}, -32602, "amount_sats must be between 1 and"),
    ({"scid": "D", "amount_sats": 10**12}, -32602, "amount_sats must be between 1 and"),
    ({"scid": "D", "amount_sats": "lots"}, -32602, "amount_sats must be a whole number"),
    ({"scid": "D", "force": "yes"}, -32602, "force must be true or false"),
    ({"amount_sats": 1000}, -32602, "amount_sats needs a scid"),
    ({"force": True}, -32602, "force needs a scid"),
])
def test_bad_requests_get_a_clear_error_and_change_nothing(node, params, code, message):
    plugin = ready(node)
    if params.get("scid") == "D":
        params = dict(params, scid=node.ids["D"])
    with pytest.raises(SimRpcError) as err:
        plugin.call("revenue-rebalance", params)
    assert err.value.code == code and message in err.value.message
    assert sling_jobs(node) == set() and ledger_rows(node) == []


def test_a_closed_channel_is_refused(node):
    plugin = ready(node)
    node.close_channel(node.ids["D"], keep_onchain=True)
    with pytest.raises(SimRpcError, match="is not open for payments"):
        plugin.call("revenue-rebalance", {"scid": node.ids["D"]})
    assert ledger_rows(node) == []


def test_without_sling_a_manual_rebalance_is_refused(node):
    node.set_plugin_loaded("sling", False)
    plugin = ready(node)
    with pytest.raises(SimRpcError, match="sling plugin not loaded"):
        plugin.call("revenue-rebalance", {"scid": node.ids["D"]})
    assert plugin.call("revenue-rebalance")["ran"] is False


def test_a_low_wallet_refuses_rebalancing(node):
    plugin = ready(node, **{"revenue-ops-min-wallet-reserve-sats": 10**11})
    with pytest.raises(SimRpcError, match="reserve"):
        plugin.call("revenue-rebalance", {"scid": node.ids["D"]})
    assert sling_jobs(node) == set() and ledger_rows(node) == []


def test_an_exhausted_budget_is_an_error(node):
    plugin = ready(node, **{"revenue-ops-daily-budget-sats": 0})
    with pytest.raises(SimRpcError, match="budget exhausted"):
        plugin.call("revenue-rebalance", {"scid": node.ids["D"]})
    assert sling_jobs(node) == set()


def wait_until(predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def job_rows(node):
    with sqlite3.connect(f"file:{db_path(node)}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT j.status, j.moved_msat, j.fee_paid_msat, b.reserved_msat, b.spent_msat"
                            " FROM rebalance_jobs j JOIN budget_ledger b ON b.job_id = j.id").fetchall()


def test_a_fast_sling_moves_exactly_the_amount_and_the_watch_reconciles_it(node):
    plugin = ready(node, **{"revenue-ops-rebalance-watch-interval-seconds": 2})
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d, "amount_sats": 500_000})
    node.sling.payments_per_step = 50        # sling pays as fast as it can, between two watches
    node.sling.step()
    assert d not in sling_jobs(node)         # sling-once stopped itself at the amount
    assert wait_until(lambda: job_rows(node)[0][0] != "running")   # reconciled without another pass
    status, moved, fee, reserved, spent = job_rows(node)[0]
    assert status == "done" and moved == 500_000_000
    paid = sum(r["amount_msat"] * r["fee_ppm"] // 1_000_000 for r in node.sling.successes[d])
    assert paid == 50_000 and 49_000 <= fee <= paid     # 5 x 10 sat; sling's figure rounds down
    assert paid <= spent <= paid + 1000 and spent <= reserved   # the ledger charges at least that


def age_balance_marks(node, hours):
    """As if `hours` had passed since each channel's balance was last marked."""
    with sqlite3.connect(db_path(node)) as conn:
        for scid, text in conn.execute("SELECT scid, state_json FROM fee_state").fetchall():
            state = json.loads(text)
            if state.get("balance_mark"):
                state["balance_mark"]["at"] -= hours * 3600
                state["balance_mark"]["hour"] -= hours
                conn.execute("UPDATE fee_state SET state_json = ? WHERE scid = ?", (json.dumps(state), scid))


def test_a_refill_bought_is_not_read_as_inflow_from_outside_the_forwards(node):
    # D's balance rises by the 500 k sat sling bought: the fee stages must not read that as
    # liquidity arriving for free (it was paid for, and is counted as a refill)
    options = {"revenue-ops-rebalance-watch-interval-seconds": 2}
    d = node.ids["D"]
    plugin = ready(node, **options)
    plugin.call("revenue-adjust-fees")                     # D's balance is marked
    plugin.shutdown()
    age_balance_marks(node, 7)
    plugin = ready(node, **options)
    plugin.call("revenue-rebalance", {"scid": d, "amount_sats": 500_000})
    node.sling.payments_per_step = 50
    node.sling.step()
    assert wait_until(lambda: job_rows(node)[0][0] != "running")
    plugin.call("revenue-adjust-fees")
    state = plugin.call("revenue-fees", {"scid": d})["channels"][0]["controller_state"]
    mark = state["balance_mark"]
    assert mark["local_msat"] == node.channel(d)["local_msat"] == 1_500_000_000   # the refill is seen
    assert mark["refilled_msat"] == 500_000_000                                  # and accounted
    assert mark["outside_msat_per_hour"] == 0


def test_sling_stats_that_roll_over_charge_the_whole_reservation(node):
    d = node.ids["D"]
    node.sling.successes[d] = [{"amount_msat": 100_000_000, "fee_ppm": 300, "hops": 3,   # an older rebalance
                                "channel_partner": node.ids["S1"], "completed_at": int(NOW - 29 * 86400)}]
    plugin = ready(node, **{"revenue-ops-rebalance-watch-interval-seconds": 2})
    plugin.call("revenue-rebalance", {"scid": d})
    node.sling.step()
    node.sling.successes[d] = node.sling.successes[d][1:]   # the old one leaves sling's 30-day window
    assert wait_until(lambda: job_rows(node)[0][0] != "running")
    status, moved, fee, reserved, spent = job_rows(node)[0]
    assert status == "stats_reset" and spent == reserved


def test_a_sling_job_deleted_behind_our_back_is_ended_and_charged_in_full(node):
    plugin = ready(node, **{"revenue-ops-rebalance-watch-interval-seconds": 2})
    d = node.ids["D"]
    plugin.call("revenue-rebalance", {"scid": d})
    node.sling.step()
    node_rpc(node).call("sling-deletejob", {"job": d, "delete_stats": True})
    assert wait_until(lambda: job_rows(node)[0][0] != "running")
    status, moved, fee, reserved, spent = job_rows(node)[0]
    assert status == "vanished" and spent == reserved


def test_dry_run_leaves_the_operators_sling_jobs_alone(tmp_path):
    with SimNode(str(tmp_path)) as sim:
        sim.ids = build_market(sim)
        sim.set_plugin_loaded("sling", True)
        node_rpc(sim).call("sling-job", {"scid": sim.ids["S1"], "direction": "pull", "amount": 100000,
                                         "maxppm": 100, "outppm": 0})
        plugin = start_plugin(sim, **{"revenue-ops-dry-run": True})
        plugin.wait_for_log("Startup Hygiene: dry-run, left 1 sling jobs alone.")
        assert set(node_rpc(sim).call("sling-jobsettings")) == {sim.ids["S1"]}


def test_rpc_calls_do_not_leak_file_descriptors(node):
    import os
    plugin = ready(node)
    for _ in range(5):
        plugin.call("revenue-analyze")
    before = len(os.listdir(f"/proc/{plugin.pid}/fd"))
    for _ in range(40):
        plugin.call("revenue-analyze")
    assert len(os.listdir(f"/proc/{plugin.pid}/fd")) <= before + 2
