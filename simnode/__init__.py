"""A simulated Core Lightning v26.06 node for tests, the demo and benchmarks.

    from simnode import SimNode
    with SimNode(tmp_path) as node:
        scid = node.add_channel(capacity_sats=2_000_000, local_sats=1_500_000, fee_ppm=200)
        plugin = node.start_plugin("cl-revenue-ops.py", options={...})
        plugin.call("revenue-status")

The node serves lightningd's JSON-RPC on <base_dir>/regtest/lightning-rpc and runs plugin
files as child processes speaking the plugin protocol, so the plugin under test is the
real one.  See DESIGN.md section 9.
"""
import os
import threading
import random
import time

from .forwards import ForwardStore
from .plugin_host import PluginProcess
from .rpc_server import RpcServer
from .sling import SimSling
from .state import NodeState, SimRpcError

__all__ = ["SimNode", "PluginProcess", "SimRpcError"]


class SimNode:
    def __init__(self, base_dir, forwards_db=":memory:", wait_timeout=60, node_id=None):
        self.lightning_dir = os.path.join(str(base_dir), "regtest")
        os.makedirs(self.lightning_dir, exist_ok=True)
        self.rpc_path = os.path.join(self.lightning_dir, "lightning-rpc")
        self.wait_timeout = wait_timeout   # `wait` answers with the current value after this
        self.stopping = threading.Event()
        self.state = NodeState(node_id=node_id)
        self.forwards = ForwardStore(forwards_db)
        self.sling = SimSling(self.state)
        self.plugins = []                  # PluginProcess objects started here
        self._plock = threading.Lock()
        self.server = RpcServer(self, self.rpc_path)

    # ---- lifecycle ----------------------------------------------------------
    def close(self, plugin_timeout=10):
        """Stops plugins (shutdown notification, then kill if they overstay), the sling
        stepper and the socket server."""
        if self.stopping.is_set():
            return
        for plugin in list(self.plugins):
            if plugin.alive:
                plugin.shutdown(timeout=plugin_timeout)
        self.sling.close()
        self.stopping.set()
        self.server.close()
        self.forwards.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- channels and funds ---------------------------------------------------
    @property
    def node_id(self):
        return self.state.node_id

    def add_channel(self, capacity_sats=1_000_000, local_sats=500_000, fee_ppm=100,
                    fee_base_msat=1, opener="local", peer_id=None, scid=None, htlcs_in_use=0,
                    max_htlcs=483, connected=True, state="CHANNELD_NORMAL", **extra):
        """Returns the scid ("800007x13x0"...).  extra: private, remote_fee_ppm,
        remote_fee_base_msat (the peer's policy shown in updates.remote)."""
        return self.state.add_channel(capacity_sats, local_sats, fee_ppm, fee_base_msat, opener,
                                      peer_id, scid, htlcs_in_use, max_htlcs, connected, state,
                                      **extra)

    def add_random_channels(self, count, seed=1):
        """A routing node's mix: 1-16 M sat channels, balances 5-95 % local, fees 10-500 ppm,
        a third opened by the peer. Returns their scids."""
        rng = random.Random(seed)
        scids = []
        for _ in range(count):
            capacity = rng.choice([1, 2, 5, 10, 16]) * 1_000_000
            scids.append(self.add_channel(capacity_sats=capacity,
                                          local_sats=int(capacity * rng.uniform(0.05, 0.95)),
                                          fee_ppm=rng.choice([10, 50, 100, 200, 500]),
                                          opener=rng.choice(["local", "local", "remote"])))
        return scids

    def close_channel(self, scid, keep_onchain=False):
        """Closes the channel.  By default it is GONE from listpeerchannels and listfunds
        (like a channel lightningd has forgotten); with keep_onchain=True it stays listed
        in state "ONCHAIN", disconnected, with zero spendable/receivable.  Its forwards stay
        in listforwards and node.channel(scid) still returns the record."""
        self.state.close_channel(scid, keep_onchain)

    def channel(self, scid):
        """The internal record: capacity_msat, local_msat, fee_ppm, fee_base_msat, opener,
        connected, state, htlcs_in_use, max_htlcs, peer_id, ... (mutable, live)."""
        return self.state.channel(scid)

    def update_channel(self, scid, **fields):
        """Set record fields directly, e.g. connected=False, state=..., htlcs_in_use=5."""
        with self.state.lock:
            ch = self.state.channel(scid)
            unknown = set(fields) - set(ch)
            if unknown:
                raise KeyError(f"unknown channel fields {sorted(unknown)}")
            ch.update(fields)

    def set_balance(self, scid, local_msat):
        self.state.set_balance(scid, local_msat)

    def set_network_fees(self, peer_id, fees_ppm, active=True, base_fee_msat=1000):
        """Other nodes' channels into peer_id as gossip (listchannels) has them, one per
        fee, replacing those set before; active: one bool for all, or one per fee."""
        self.state.set_network_fees(peer_id, fees_ppm, active, base_fee_msat)

    @property
    def funds_onchain_msat(self):
        return self.state.funds_onchain_msat

    @funds_onchain_msat.setter
    def funds_onchain_msat(self, value):
        self.state.funds_onchain_msat = int(value)

    # ---- forwards -------------------------------------------------------------
    def add_forward(self, in_channel, out_channel, out_msat, fee_msat, status="settled",
                    received_time=None, resolved_time=None, failcode=None, style="tlv"):
        """Returns created_index.  in_msat = out_msat + fee_msat.  local_failed rows get
        failcode (default 4103 WIRE_TEMPORARY_CHANNEL_FAILURE) and show no out amounts.
        Channel balances are not touched."""
        return self.forwards.add(in_channel, out_channel, out_msat, fee_msat, status,
                                 received_time, resolved_time, failcode, style)

    def settle_forward(self, created_index, resolved_time=None):
        """offered -> settled; returns the new updated_index."""
        return self.forwards.resolve(created_index, "settled", resolved_time)

    def fail_forward(self, created_index, resolved_time=None):
        """offered -> failed (the next hop failed it); returns the new updated_index."""
        return self.forwards.resolve(created_index, "failed", resolved_time)

    def forward(self, created_index):
        """The forward as listforwards shows it."""
        return self.forwards.forward(created_index)

    def generate_history(self, n_forwards, channels=None, start_time=None, end_time=None,
                         seed=1, settled_share=0.9):
        """Bulk history among `channels` (default: all open ones); times default to the
        30 days before now.  See ForwardStore.generate_history."""
        end_time = time.time() if end_time is None else end_time
        start_time = end_time - 30 * 86400 if start_time is None else start_time
        policies = self.state.fee_policies()
        if channels is not None:
            policies = {s: policies.get(s, (100, 1)) for s in channels}
        self.forwards.generate_history(n_forwards, policies, start_time, end_time, seed,
                                       settled_share)

    def emit_forward(self, plugin, created_index, history=False):
        """Send the forward_event a node sends for this forward's current status (offered,
        settled, failed or local_failed); history=True sends the whole sequence (offered
        then settled/failed).  plugin=None: every subscribed plugin.  A fault
        node.fault("forward_event", "old_shapes") sends "<n>msat" strings and no indexes."""
        from .rpc_server import old_amounts
        events = self.forwards.events(created_index, history)
        fault = self.state.take_fault("forward_event")
        if fault and fault["kind"] == "old_shapes":
            events = [old_amounts({k: v for k, v in e.items()
                                   if k not in ("created_index", "updated_index")})
                      for e in events]
        targets = [plugin] if plugin is not None else list(self.plugins)
        for target in targets:
            for event in events:
                target.notify("forward_event", event)
        return events

    # ---- faults and call log ----------------------------------------------------
    def fault(self, method, kind, **kw):
        """kind "error" (code=-1, message, data), "hang" (seconds), "old_shapes", or
        "random" (error_rate, hang_rate, seconds: a number or a (low, high) range, seed,
        code, message): each call draws an error, a hang or a normal answer.
        Optional times=N: the fault applies to the next N calls only; when=predicate:
        only to calls whose params (list, dict or None) it returns true for."""
        self.state.set_fault(method, kind, **kw)

    def faults_injected(self):
        """{(method, kind): count} of the faults applied to calls so far."""
        with self.state.lock:
            return dict(self.state.faults_injected)

    def clear_faults(self, method=None):
        self.state.clear_faults(method)

    @property
    def calls(self):
        """Snapshot of (method, params) received on the socket, in order."""
        return self.state.calls()

    def calls_of(self, method):
        return [params for m, params in self.state.calls() if m == method]

    def clear_calls(self):
        self.state.clear_calls()

    # ---- plugins ----------------------------------------------------------------
    def set_plugin_loaded(self, name, loaded=True):
        """Fake "sling" / "clboss": listed by `plugin list`, their methods answer."""
        with self.state.lock:
            if loaded:
                self.state.loaded.add(name)
            else:
                self.state.loaded.discard(name)

    def start_plugin(self, path, options=None, env=None):
        plugin = PluginProcess(self, path, options, env)
        with self._plock:
            self.plugins.append(plugin)
        plugin.start()
        return plugin

    def notify_all(self, topic, payload):
        """Send a notification to every plugin subscribed to topic."""
        for plugin in list(self.plugins):
            plugin.notify(topic, payload)

    def started_plugins(self):
        return [(p.path, bool(p.manifest.get("dynamic"))) for p in self._live_plugins()]

    def _live_plugins(self):
        with self._plock:
            return [p for p in self.plugins if p.alive and p.initialized
                    and p.disabled is None]

    def plugin_for_method(self, method):
        for plugin in self._live_plugins():
            if any(m.get("name") == method for m in plugin.manifest.get("rpcmethods", [])):
                return plugin
        return None

    def plugin_for_option(self, name):
        for plugin in self._live_plugins():
            if any(o.get("name") == name for o in plugin.manifest.get("options", [])):
                return plugin
        return None

    def _plugin_exited(self, plugin):
        """Called by the plugin's reader thread; it stays in self.plugins for inspection."""
