"""Runs a plugin file as a child process and speaks the plugin protocol to it.

Mirrors lightningd/plugin.c: `getmanifest` {"allow-deprecated-apis": false}, then `init`
with every manifest option that has a value (defaults merged with the given ones, typed
as lightningd types them: int/bool as JSON numbers/booleans, string as string, flag as
true, multi as a list) and `configuration`; a result {"disable": reason} stops the
plugin.  Messages both ways are JSON objects terminated by "\\n\\n".  A reader thread
drains the child's stdout all the time so it never blocks on a full pipe; stderr goes to
a file in the lightning dir.
"""
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time

from .state import FEATURE_SET, VERSION, SimRpcError

PLUGIN_TERMINATED = -4
INIT_FEATURES = dict(FEATURE_SET, bolt12_offer="", bolt12_invreq="", bolt12_invoice="020000",
                     channel_type="08800000800000")
_counter = itertools.count(1)


def typed_option(opt_type, val):
    """An option value as lightningd puts it in `init` (cln-samples/init.json)."""
    if opt_type == "int":
        return int(val)
    if opt_type in ("bool", "flag"):
        if isinstance(val, str):
            return val.lower() in ("true", "1", "yes", "on")
        return bool(val)
    if isinstance(val, bool):
        return "true" if val else "false"
    return str(val)


class PluginProcess:
    def __init__(self, node, path, options=None, env=None):
        self.node = node
        self.path = os.path.abspath(path)
        self.name = os.path.basename(path)
        self.given_options = dict(options or {})
        self.env = dict(env or {})
        self.manifest = self.init_result = self.disabled = None
        self.initialized = False  # init answered without error
        self.proc = self.pid = None
        self.logs = []            # (level, message) from "log" notifications
        self.notifications = []   # (method, params) of any other notification it sent
        self.others = []          # anything else it wrote (requests, junk)
        self._cond = threading.Condition()
        self._pending = {}
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._exited = threading.Event()
        self.stderr_path = os.path.join(node.lightning_dir,
                                        f"plugin-{self.name}-{next(_counter)}.stderr")

    # ---- start-up -------------------------------------------------------
    def start(self):
        env = dict(os.environ, LIGHTNINGD_PLUGIN="1", LIGHTNINGD_VERSION=VERSION)
        env.update(self.env)
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, self.path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr,
                                     cwd=self.node.lightning_dir, env=env)
        self.pid = self.proc.pid
        threading.Thread(target=self._read_loop, name=f"plugin-{self.name}",
                         daemon=True).start()
        try:
            self.manifest = self._request("getmanifest", {"allow-deprecated-apis": False}, 60)
            self.init_result = self._request("init", self._init_params(), 60)
        except (SimRpcError, TimeoutError, ValueError) as err:
            self.kill()
            raise RuntimeError(f"plugin {self.name} failed to start: {err}\n"
                               f"stderr:\n{self.stderr_tail()}") from err
        self.initialized = True
        if isinstance(self.init_result, dict) and "disable" in self.init_result:
            self.disabled = str(self.init_result["disable"])
            self._stop(grace=1.0)
        return self

    def _init_params(self):
        opts = {o["name"]: o for o in self.manifest.get("options", [])}
        unknown = set(self.given_options) - set(opts)
        if unknown:  # lightningd refuses to start with options nobody registered
            raise ValueError(f"unknown option(s) {sorted(unknown)}")
        values = {}
        for name, opt in opts.items():
            if name in self.given_options:
                val = self.given_options[name]
            elif opt.get("default") is not None:
                val = opt["default"]
            else:
                continue
            typ = opt.get("type", "string")
            if opt.get("multi"):
                values[name] = [typed_option(typ, v) for v in
                                (val if isinstance(val, list) else [val])]
            elif typ != "flag" or typed_option(typ, val):
                values[name] = typed_option(typ, val)
        return {"options": values,
                "configuration": {"lightning-dir": self.node.lightning_dir,
                                  "rpc-file": "lightning-rpc", "startup": True,
                                  "network": "regtest", "feature_set": dict(INIT_FEATURES)}}

    # ---- I/O --------------------------------------------------------------
    def _read_loop(self):
        buf = b""
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *msgs, buf = buf.split(b"\n\n")
            for raw in msgs:
                if raw.strip():
                    self._handle(raw)
        self._on_exit()

    def _handle(self, raw):
        try:
            msg = json.loads(raw)
        except ValueError:
            with self._cond:
                self.others.append(raw)
            return
        with self._cond:
            if "id" in msg and ("result" in msg or "error" in msg):
                slot = self._pending.pop(str(msg["id"]), None)
                if slot is not None:
                    slot["resp"] = msg
                    slot["event"].set()
                return
            if msg.get("method") == "log":
                params = msg.get("params") or {}
                self.logs.append((params.get("level", "info"), str(params.get("message", ""))))
                self._cond.notify_all()
            elif "id" not in msg and "method" in msg:
                self.notifications.append((msg["method"], msg.get("params")))
            else:
                self.others.append(msg)

    def _on_exit(self):
        self.proc.wait()
        self._exited.set()
        with self._cond:
            pending, self._pending = self._pending, {}
            self._cond.notify_all()
        for slot in pending.values():
            slot["resp"] = {"error": {"code": PLUGIN_TERMINATED,
                                      "message": "Plugin terminated before replying to RPC call."}}
            slot["event"].set()
        self._stderr.close()
        self.node._plugin_exited(self)

    def _send(self, obj):
        data = json.dumps(obj).encode("utf-8") + b"\n\n"
        with self._write_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                raise SimRpcError(PLUGIN_TERMINATED,
                                  "Plugin terminated before replying to RPC call.") from None

    def _start_request(self, method, params, rid):
        slot = {"event": threading.Event(), "resp": None}
        with self._cond:
            if self._exited.is_set():
                raise SimRpcError(PLUGIN_TERMINATED,
                                  "Plugin terminated before replying to RPC call.")
            self._pending[rid] = slot
        self._send({"jsonrpc": "2.0", "id": rid, "method": method,
                    "params": {} if params is None else params})
        return slot

    def _request(self, method, params, timeout, rid=None):
        rid = rid or f"cln:{method}#{next(self._ids)}"
        slot = self._start_request(method, params, rid)
        if not slot["event"].wait(timeout):
            with self._cond:
                self._pending.pop(rid, None)
            raise TimeoutError(f"{self.name}: no answer to {method} within {timeout}s")
        resp = slot["resp"]
        if "error" in resp:
            err = resp["error"] or {}
            raise SimRpcError(err.get("code"), err.get("message"), err.get("data"))
        return resp.get("result")

    # ---- public API ---------------------------------------------------------
    def call(self, method, params=None, timeout=30):
        """Like lightning-cli talking to this plugin's method; raises SimRpcError."""
        return self._request(method, params, timeout, f"cli:{method}#{next(self._ids)}")

    def forward(self, method, params, client_id=None):
        """A socket client's call relayed as lightningd does; returns the raw response."""
        prefix = f"{client_id}/" if client_id is not None else ""
        try:
            slot = self._start_request(method, params, f"{prefix}cln:{method}#{next(self._ids)}")
        except SimRpcError as err:
            return {"error": err.to_json()}
        while not slot["event"].wait(0.5):
            if self.node.stopping.is_set():
                return {"error": {"code": PLUGIN_TERMINATED,
                                  "message": "Plugin terminated before replying to RPC call."}}
        return slot["resp"]

    def call_raw(self, method, params_text, timeout=30):
        """A request whose params are sent as the given JSON text, byte for byte (what no
        Python value can express, e.g. an integer of 5000 digits). Returns the raw answer."""
        rid = f"cli:{method}#{next(self._ids)}"
        slot = {"event": threading.Event(), "resp": None}
        with self._cond:
            if self._exited.is_set():
                raise SimRpcError(PLUGIN_TERMINATED, "Plugin terminated before replying to RPC call.")
            self._pending[rid] = slot
        head = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method})[:-1]
        data = f'{head}, "params": {params_text}}}'.encode("utf-8") + b"\n\n"
        with self._write_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                raise SimRpcError(PLUGIN_TERMINATED,
                                  "Plugin terminated before replying to RPC call.") from None
        if not slot["event"].wait(timeout):
            with self._cond:
                self._pending.pop(rid, None)
            raise TimeoutError(f"{self.name}: no answer to {method} within {timeout}s")
        return slot["resp"]

    def subscribes(self, topic):
        subs = (self.manifest or {}).get("subscriptions", [])
        return topic in subs or "*" in subs

    def notify(self, topic, payload, force=False):
        """Send {topic: payload} like lightningd; unsubscribed topics are not sent unless
        force (lightningd never sends them, and pyln raises on them).  True if sent."""
        if not (force or self.subscribes(topic)) or not self.alive:
            return False
        self._send({"jsonrpc": "2.0", "method": topic, "params": {topic: payload}})
        return True

    def setconfig(self, name, value):
        """What lightningd sends on `setconfig` of a dynamic option: the value as a string."""
        val = typed_option("string", value) if value is not None else None
        return self._request("setconfig", {"config": name, "val": val}, 30)

    def wait_for_log(self, regex, timeout=10, since=0):
        """First log message (at index >= since) matching regex; TimeoutError otherwise."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _level, msg in self.logs[since:]:
                    if pat.search(msg):
                        return msg
                since = max(since, len(self.logs))
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(f"{lv}: {m}" for lv, m in self.logs[-20:])
                    raise TimeoutError(f"no log matching {regex!r} in {timeout}s; last logs:\n"
                                       f"{tail}")
                self._cond.wait(left)

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    def shutdown(self, timeout=10, grace=2.0):
        """`shutdown` notification (if subscribed), stdin closed after `grace` seconds,
        SIGKILL when still running after `timeout`.  Returns the exit code."""
        if self.alive and self.subscribes("shutdown"):
            try:
                self.notify("shutdown", {})
            except SimRpcError:
                pass
            self._exited.wait(min(grace, timeout))
        return self._stop(grace=max(0.0, timeout - grace))

    def _stop(self, grace):
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
        self._exited.wait(5)
        return self.proc.returncode

    def kill(self):
        """SIGKILL the child (crash tests); returns its exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            self._exited.wait(5)
            return self.proc.returncode
        return None

    def rss_peak_kb(self):
        """VmHWM of the live child in kB (None once gone)."""
        if not self.alive:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def stderr_tail(self, lines=40):
        try:
            with open(self.stderr_path, "rb") as fh:
                return b"\n".join(fh.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""
