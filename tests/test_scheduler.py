import random
import threading
import time

from modules.scheduler import Loop, Scheduler


def test_a_failing_cycle_is_counted_and_the_loop_keeps_running():
    calls = []
    logs = []

    def cycle():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("node went away")
        return {"ok": len(calls)}

    loop = Loop("flow", cycle, interval_seconds=0.01, log=lambda m, l: logs.append((l, m)))
    loop.start(first_delay=0)
    deadline = time.time() + 5
    while loop.stats.runs < 3 and time.time() < deadline:
        time.sleep(0.01)
    loop.stop()
    assert loop.stats.runs >= 3
    assert loop.stats.errors == 1
    assert loop.stats.last_error is None          # cleared by the next good cycle
    assert loop.stats.last_result["ok"] >= 3
    assert any("RuntimeError: node went away" in m for _, m in logs)
    assert not loop.alive


def test_run_now_wakes_a_sleeping_loop_and_waits_for_its_cycle():
    ran = threading.Event()
    loop = Loop("fee", ran.set, interval_seconds=3600)
    loop.start()
    assert loop.run_now(wait=True, timeout=5)
    assert ran.is_set() and loop.stats.runs == 1
    loop.stop()


def test_jitter_stays_within_its_fraction():
    loop = Loop("x", lambda: None, interval_seconds=100, jitter_fraction=0.1, rng=random.Random(7))
    delays = [loop.next_delay() for _ in range(1000)]
    assert min(delays) >= 90 and max(delays) <= 110
    assert max(delays) - min(delays) > 10   # it does spread


def test_stop_ends_every_loop_promptly_and_stats_report_each():
    scheduler = Scheduler()
    for name in ("flow", "fee", "rebalance"):
        scheduler.add(Loop(name, lambda: None, interval_seconds=3600))
    scheduler.start()
    began = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - began < 2
    assert not any(loop.alive for loop in scheduler.loops.values())
    stats = scheduler.stats()
    assert set(stats) == {"flow", "fee", "rebalance"}
    assert set(stats["fee"]) >= {"runs", "last_start", "last_duration_seconds", "last_error", "next_run"}
