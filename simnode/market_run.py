"""The real plugin on a simulated market: a SimNode whose channels the market drives, and
the plugin's Service in this process, stepped through simulated time.

    result = run_plugin(build_market("high", 1), sling=True)

What happens, in order:
1. the node gets the market's channels (start fees, base fee 0) and the pre-history
   (`history_s` before t = 0, at the start fees) is played into its listforwards, settled
   and local_failed rows alike, so the run starts from the balances that history left;
2. the plugin starts the way cl-revenue-ops.py starts it: `Service(config, NodeAdapter(rpc),
   log, clock)`, `open()`, `start()` (hygiene, hydration, channel refresh) - only its
   scheduler's threads are not started: the driver runs each loop's `run_once()` (the
   loop's own error handling and stats) at simulated times instead;
3. simulated time: market arrivals in time order, each forward the node sees written to its
   listforwards and delivered as the live `forward_event`s (CLN's payloads, from
   ForwardStore.events: offered then settled, or local_failed); the flow loop every flow interval from
   t = 0, the fee loop every fee interval, the rebalance loop every rebalance interval
   (the plugin's config decides the intervals), and with sling loaded, every
   `attempt_interval_s` the job watch then one sling payment attempt per running task
   (SimSling.step with a RefillCosts model: per destination a median cost, noise per
   attempt, "no cheap route" above the job's maxppm, random failures).

The max-HTLC the plugin sets goes to the market as it does to senders (MarketSim.htlc_max_out).
Fee broadcasts (a setchannel of the fee, the max-HTLC or both) are counted from the node's
own log of `setchannel` calls; sling jobs from
its `sling-job` calls. The simulated clock is unix time: the run starts 25 days before
the wall clock (rounded to a day), so sling's 30-day stats window (which reads the wall
clock) covers everything the run pays.
"""
import dataclasses
import math
import random
import shutil
import tempfile
import time
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Tuple

from modules.config import PREFIX, build_config
from modules.node import NodeAdapter
from modules.service import RUNNING, Service

from . import SimNode
from .market import DAY, HOUR, SETTLED, Market, MarketSim
from .sling import RefillCosts

ATTEMPT_INTERVAL_S = 600          # one sling payment attempt per running task per 10 minutes
ONCHAIN_MSAT = 5_000_000_000      # the node's on-chain funds (above the wallet reserve)
# gossip in the routes worlds: 3-8 other nodes' channels into each peer, priced around the
# competing route's price, but not at it: a bias per peer and a spread between channels
GOSSIP_CHANNELS = (3, 8)
GOSSIP_BIAS_SIGMA = 0.4
GOSSIP_SPREAD_SIGMA = 0.5


def run_epoch(now: Optional[float] = None) -> float:
    """Unix time of the run's start: 25 days ago, on a day boundary."""
    now = time.time() if now is None else now
    return (int(now) // DAY - 25) * DAY


def option_overrides(pairs: Dict[str, Any]) -> Dict[str, Any]:
    """{"demand_half_life_hours": 48} or {"revenue-ops-demand-half-life-hours": "48"}
    -> lightningd option names, validated later by the plugin's own option table."""
    out = {}
    for name, value in pairs.items():
        short = name[len(PREFIX):] if name.startswith(PREFIX) else name
        out[PREFIX + short.replace("_", "-")] = value
    return out


@dataclasses.dataclass
class Job:
    scid: str
    started_s: float
    max_ppm: int
    moved_msat: int = 0
    fee_msat: int = 0
    attempts: int = 0


@dataclasses.dataclass
class PluginRun:
    """What one run of the plugin on a market did (msat, relative seconds)."""
    kind: str
    seed: int
    sling: bool
    days: float
    totals: Dict[str, List[int]]            # MarketSim counters per channel, over the run
    rebalance_fee_msat: int
    moved_msat: int
    payments: List[Tuple[float, int]]       # (t, fee msat) of every sling payment
    attempts: int
    jobs: List[Job]
    broadcasts: List[List[float]]           # per channel: times of its setchannel
    fee_timeline: List[List[Tuple[float, int]]]   # per channel: (t, fee in force from t)
    loop_errors: Dict[str, int]
    warnings: int
    last_warnings: List[str]
    wall_s: float
    final_local_msat: List[int]
    history_earned_msat: int                # fees earned in the pre-history (not scored)
    earnings: List[Tuple[float, int]] = dataclasses.field(default_factory=list)
    # (t, fees earned since t = 0, msat, all channels) every hour of the run, from (0, 0)

    def net_series(self) -> List[Tuple[float, int]]:
        """`earnings` less the rebalance fees paid up to each time: the plugin's net over time."""
        out, paid, payments, i = [], 0, sorted(self.payments), 0
        for t, earned in self.earnings:
            while i < len(payments) and payments[i][0] <= t:
                paid += payments[i][1]
                i += 1
            out.append((t, earned - paid))
        return out

    @property
    def earned_msat(self) -> List[int]:
        return self.totals["earned_msat"]

    @property
    def net_msat(self) -> int:
        return sum(self.earned_msat) - self.rebalance_fee_msat

    def total(self, counter: str) -> int:
        return sum(self.totals[counter])

    def most_paid_in_24h_msat(self) -> int:
        """Most rebalance fees paid in any 24 hours (by payment time): against the daily budget."""
        paid = sorted(self.payments)
        most = total = first = 0
        for t, fee in paid:
            total += fee
            while paid[first][0] <= t - DAY:
                total -= paid[first][1]
                first += 1
            most = max(most, total)
        return most

    def most_broadcasts_in_a_day(self) -> int:
        """Most fee broadcasts of one channel in one day of the run (day 0 from t = 0)."""
        most = 0
        for ts in self.broadcasts:
            counts: Dict[int, int] = {}
            for t in ts:
                counts[int(t // DAY)] = counts.get(int(t // DAY), 0) + 1
            most = max([most, *counts.values()])
        return most


def run_plugin(market: Market, sling: bool = True, overrides: Optional[Dict[str, Any]] = None,
               attempt_interval_s: float = ATTEMPT_INTERVAL_S, epoch: Optional[float] = None,
               log_path: Optional[str] = None) -> PluginRun:
    began = time.perf_counter()
    epoch = run_epoch() if epoch is None else epoch
    base_dir = tempfile.mkdtemp(prefix="mkt")
    node = SimNode(base_dir)
    try:
        return _Run(market, node, sling, overrides or {}, attempt_interval_s, epoch, log_path,
                    began).play()
    finally:
        node.close()
        shutil.rmtree(base_dir, ignore_errors=True)


def populate_node(node: SimNode, market: Market, sling: bool = False) -> List[dict]:
    """The market's channels on the node (start fees, base fee 0, opened by us), on-chain
    funds, and sling with the market's refill costs if asked; returns the channel records."""
    for c in market.channels:
        node.add_channel(capacity_sats=c.capacity_msat // 1000, local_sats=c.local_msat // 1000,
                         fee_ppm=c.start_fee_ppm, fee_base_msat=0, opener="local",
                         peer_id=c.peer_id, scid=c.scid)
    node.funds_onchain_msat = ONCHAIN_MSAT
    for peer_id, fees_ppm in gossip_fees(market).items():
        node.set_network_fees(peer_id, fees_ppm)
    if sling:
        node.set_plugin_loaded("sling", True)
        node.sling.costs = RefillCosts({c.scid: c.refill_ppm for c in market.channels},
                                       seed=f"{market.kind}-{market.seed}")
    return [node.channel(c.scid) for c in market.channels]


def gossip_fees(market: Market) -> Dict[str, List[int]]:
    """What other nodes charge into each peer with a competing route (routes worlds): the
    fees listchannels shows, drawn around the route's price with a per-peer bias."""
    out: Dict[str, List[int]] = {}
    for c in market.channels:
        if c.network_fee_ppm is None:
            continue
        rng = random.Random(f"gossip-{market.kind}-{market.seed}-{c.scid}")
        centre = c.network_fee_ppm * math.exp(rng.gauss(0, GOSSIP_BIAS_SIGMA))
        out[c.peer_id] = [max(1, int(round(centre * math.exp(rng.gauss(0, GOSSIP_SPREAD_SIGMA)))))
                          for _ in range(rng.randint(*GOSSIP_CHANNELS))]
    return out


def forward_writer(node: SimNode, market: Market, epoch: float,
                   deliver: Optional[Callable[[float, Dict[str, Any]], None]] = None):
    """A MarketSim recorder: each forward into the node's listforwards (settled, or
    local_failed with failcode 4103), and to deliver(unix time, payload) as the forward_events
    lightningd would send (offered then settled; local_failed alone)."""
    scids = [c.scid for c in market.channels]
    store = node.forwards

    def record(status: str, t: float, x: int, y: int, amount: int, fee: int) -> None:
        when = epoch + t
        ci = store.add(scids[y], scids[x], amount, fee, status, received_time=when,
                       resolved_time=when + 1.0 if status == SETTLED else None)
        if deliver is not None:   # as lightningd: "offered" then "settled", or "local_failed"
            for event in store.events(ci, history=True):
                deliver(when, event)
    return record


class _Run:
    def __init__(self, market, node, sling, overrides, attempt_interval_s, epoch, log_path, began):
        self.market, self.node, self.sling, self.epoch = market, node, sling, epoch
        self.attempt_interval_s = attempt_interval_s
        self.began = began
        self.scids = [c.scid for c in market.channels]
        self.records = populate_node(node, market, sling)
        self.by_peer = {}
        for i, c in enumerate(market.channels):
            self.by_peer.setdefault(c.peer_id, []).append(i)
        self.index = {s: i for i, s in enumerate(self.scids)}
        self.sim = MarketSim(market, self.records, forward_writer(node, market, epoch, self._deliver))
        self.config = build_config(option_overrides(overrides), node.lightning_dir)
        self.now = epoch - market.history_s
        self.service: Optional[Service] = None
        self.log_file = open(log_path, "a") if log_path else None
        self.warnings = 0
        self.last_warnings = deque(maxlen=20)
        self.broadcasts: List[List[float]] = [[] for _ in self.scids]
        self.timeline = [[(0.0, c.start_fee_ppm)] for c in market.channels]
        self.jobs: List[Job] = []
        self.current_job: Dict[str, Job] = {}
        self.payments: List[Tuple[float, int]] = []
        self.attempts = 0

    def _deliver(self, when: float, event: Dict[str, Any]) -> None:
        if self.service is not None:      # live: the plugin hears of it as lightningd tells it
            self.now = when
            self.service.on_forward_event(event)

    def _log(self, message: str, level: str = "info") -> None:
        if level in ("warn", "error"):
            self.warnings += 1
            self.last_warnings.append(f"{level}: {message.splitlines()[0]}")
        if self.log_file:
            self.log_file.write(f"{self.now - self.epoch:10.0f} {level:5} {message}\n")

    # --- time ----------------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        """Market arrivals up to t, at the fees and balances the node has now."""
        sim, records = self.sim, self.records
        with self.node.state.lock:
            for x, rec in enumerate(records):
                sim.local_msat[x] = rec["local_msat"]
                sim.fee_ppm[x] = rec["fee_ppm"]
                sim.fee_base_msat[x] = rec["fee_base_msat"]
                sim.htlc_max_out[x] = rec["htlc_max_msat"]     # what the plugin advertises
        sim.advance(t)
        with self.node.state.lock:
            for x, rec in enumerate(records):
                rec["local_msat"] = sim.local_msat[x]
        self.now = self.epoch + t

    def _start_plugin(self) -> None:
        service = Service(self.config, NodeAdapter(self.node.rpc_path, self.config.rpc_timeout_seconds),
                          self._log, clock=lambda: self.now)
        service.scheduler.start = lambda *args, **kwargs: None   # the driver runs the loops
        service.open()
        self.service = service
        service.start()
        deadline = time.monotonic() + 600
        while service.phase != RUNNING:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the plugin did not finish starting: phase {service.phase}")
            time.sleep(0.005)
        if service.startup_error:
            raise RuntimeError(f"plugin start-up failed: {service.startup_error}")

    def play(self) -> PluginRun:
        m, cfg = self.market, self.config
        self._advance(0.0)                    # the pre-history, before the plugin runs
        self._at_start = self.sim.totals()
        self.sim.record_earnings(HOUR)
        self._start_plugin()
        loops = self.service.scheduler.loops
        every = {"flow": cfg.flow_interval_seconds, "fee": cfg.fee_interval_seconds,
                 "rebalance": cfg.rebalance_interval_seconds}
        due = {"flow": 0.0, "fee": float(every["fee"]), "rebalance": float(every["rebalance"])}
        if self.sling:
            every["sling"] = self.attempt_interval_s
            due["sling"] = float(self.attempt_interval_s)
        try:
            while True:
                t = min(due.values())
                if t >= m.run_s:
                    break
                self._advance(t)
                for name in ("flow", "fee", "rebalance"):
                    if due[name] == t:
                        loops[name].run_once()
                        due[name] += every[name]
                        self._harvest(t)
                if due.get("sling") == t:
                    loops["jobs"].run_once()
                    self._harvest(t)
                    self._sling_step(t)
                    due["sling"] += every["sling"]
            self._advance(m.run_s)
        finally:
            self.service.stop()
            if self.log_file:
                self.log_file.close()
        return self._result()

    def _sling_step(self, t: float) -> None:
        for move in self.node.sling.step(self.epoch + t):
            self.attempts += 1
            job = self.current_job.get(move["scid"])
            if job is not None:
                job.attempts += 1
            if move["ok"]:
                self.payments.append((t, move["fee_msat"]))
                if job is not None:
                    job.moved_msat += move["amount_msat"]
                    job.fee_msat += move["fee_msat"]

    def _harvest(self, t: float) -> None:
        """What the plugin asked of the node: fee broadcasts and sling jobs."""
        node = self.node
        with node.state.lock:
            calls = node.state.calls()
            node.state.clear_calls()
        for method, params in calls:
            if method == "setchannel":
                ident = params.get("id") if isinstance(params, dict) else params[0]
                targets = ([self.index[ident]] if ident in self.index else
                           self.by_peer.get(ident, range(len(self.scids)) if ident == "all" else []))
                for x in targets:
                    self.broadcasts[x].append(t)
            elif method in ("sling-job", "sling-once") and isinstance(params, dict):
                job = Job(params.get("scid"), t, int(params.get("maxppm", 0)))
                self.jobs.append(job)
                self.current_job[job.scid] = job
        for x, rec in enumerate(self.records):
            if rec["fee_ppm"] != self.timeline[x][-1][1]:
                self.timeline[x].append((t, rec["fee_ppm"]))

    def _result(self) -> PluginRun:
        sim, m = self.sim, self.market
        start = self._at_start
        loops = self.service.scheduler.loops
        return PluginRun(
            kind=m.kind, seed=m.seed, sling=self.sling, days=m.days,
            totals={k: [a - b for a, b in zip(v, start[k])] for k, v in sim.totals().items()},
            rebalance_fee_msat=sum(f for _, f in self.payments),
            moved_msat=sum(j.moved_msat for j in self.jobs), payments=self.payments,
            attempts=self.attempts, jobs=self.jobs, broadcasts=self.broadcasts,
            fee_timeline=self.timeline,
            loop_errors={name: loop.stats.errors for name, loop in loops.items() if loop.stats.errors},
            warnings=self.warnings, last_warnings=list(self.last_warnings),
            wall_s=time.perf_counter() - self.began,
            final_local_msat=[r["local_msat"] for r in self.records],
            history_earned_msat=sum(start["earned_msat"]), earnings=list(sim.earnings))
