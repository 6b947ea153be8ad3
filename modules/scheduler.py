"""Background loops: each a daemon thread with an interval, jitter and a stop event.

A cycle that raises is logged and counted; the loop goes on. `run_now` wakes a loop
early and can wait for that cycle to finish, so RPC methods and tests can trigger work.
`set_interval` (an option changed at runtime) applies to the wait under way, counted
from when it began, and to every wait after it.
"""
import dataclasses
import random
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional

Clock = Callable[[], float]


@dataclasses.dataclass
class LoopStats:
    runs: int = 0
    errors: int = 0
    last_start: Optional[float] = None
    last_duration_seconds: Optional[float] = None
    last_error: Optional[str] = None
    last_result: Any = None
    next_run: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.last_duration_seconds is not None:
            data["last_duration_seconds"] = round(self.last_duration_seconds, 4)
        return data


class Loop:
    def __init__(self, name: str, cycle: Callable[[], Any], interval_seconds: float,
                 jitter_fraction: float = 0.0, log: Callable[[str, str], None] = lambda m, l: None,
                 clock: Clock = time.time, rng: Optional[random.Random] = None):
        self.name = name
        self.cycle = cycle
        self.interval_seconds = interval_seconds
        self.jitter_fraction = jitter_fraction
        self.log = log
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._started = 0   # cycles begun; stats.runs counts cycles ended
        self._asked = False     # run_now woke the loop
        self._rearm = False     # set_interval woke it: wait again, for the new interval
        self._thread: Optional[threading.Thread] = None

    def next_delay(self) -> float:
        spread = self.interval_seconds * self.jitter_fraction
        return max(0.0, self.interval_seconds + self.rng.uniform(-spread, spread))

    def set_interval(self, interval_seconds: float, jitter_fraction: float) -> None:
        if (interval_seconds, jitter_fraction) == (self.interval_seconds, self.jitter_fraction):
            return
        self.interval_seconds = interval_seconds
        self.jitter_fraction = jitter_fraction
        self._rearm = True
        self._wake.set()

    def start(self, first_delay: Optional[float] = None) -> None:
        self._rearm = False   # an interval set before the start is in force already
        self._thread = threading.Thread(target=self._run, args=(first_delay,),
                                        name=f"loop-{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def run_now(self, wait: bool = False, timeout: float = 60.0) -> bool:
        """Wakes the loop; with wait, blocks until a cycle that started after this call ends."""
        with self._done:
            # a cycle already under way may have read its inputs: wait for the next one
            needed = self._started + 1
        self._asked = True
        self._wake.set()
        if not wait:
            return True
        with self._done:
            return self._done.wait_for(lambda: self.stats.runs >= needed or self._stop.is_set(), timeout)

    def run_once(self) -> Any:
        """One cycle on the calling thread, with the same error handling and stats."""
        started = self.clock()
        began = time.monotonic()
        with self._done:
            self._started += 1
        self.stats.last_start = started
        result = None
        try:
            result = self.cycle()
            self.stats.last_result = result
            self.stats.last_error = None
        except Exception as e:  # a failing cycle never kills its loop
            self.stats.errors += 1
            self.stats.last_error = f"{type(e).__name__}: {e}"
            self.log(f"{self.name} cycle failed: {self.stats.last_error}\n{traceback.format_exc()}", "warn")
        finally:
            with self._done:
                self.stats.last_duration_seconds = time.monotonic() - began
                self.stats.runs += 1
                self._done.notify_all()
        return result

    def _run(self, first_delay: Optional[float]) -> None:
        delay = self.next_delay() if first_delay is None else first_delay
        while self._wait(delay):
            self.run_once()
            delay = self.next_delay()
        self.stats.next_run = None
        with self._done:
            self._done.notify_all()

    def _wait(self, delay: float) -> bool:
        """Until the next cycle is due (True) or the loop stops (False)."""
        began = time.monotonic()
        while True:
            left = max(0.0, began + delay - time.monotonic())
            self.stats.next_run = self.clock() + left
            due = not self._wake.wait(left)
            self._wake.clear()
            if self._stop.is_set():
                return False
            if due or self._asked:
                self._asked = False
                return True
            if self._rearm:   # a new interval: the wait under way is measured by it
                self._rearm = False
                delay = self.next_delay()


class Scheduler:
    """Owns the loops; starts and stops them together."""

    def __init__(self):
        self.loops: Dict[str, Loop] = {}

    def add(self, loop: Loop) -> Loop:
        self.loops[loop.name] = loop
        return loop

    def start(self, first_delays: Optional[Dict[str, float]] = None) -> None:
        for name, loop in self.loops.items():
            loop.start((first_delays or {}).get(name))

    def stop(self, timeout: float = 10.0) -> None:
        for loop in self.loops.values():
            loop.request_stop()
        deadline = time.monotonic() + timeout
        for loop in self.loops.values():
            loop.stop(max(0.1, deadline - time.monotonic()))

    def stats(self) -> Dict[str, Dict[str, Any]]:
        return {name: loop.stats.to_dict() for name, loop in self.loops.items()}
