"""Unix-socket JSON-RPC server of the simulated node (lightningd's `lightning-rpc`).

Like lightningd it accepts JSON request objects back to back on a connection (pyln's
LightningRpc sends them with no separator, one connection per call) and writes each
response followed by "\\n\\n".  One thread per connection; requests on a connection are
answered in order.  Parameters are bound by name or position like CLN's param() and
errors carry CLN's codes and texts (developer-mode wording, as in cln-samples).
The "filter" member of requests is ignored.
"""
import json
import os
import re
import socket
import tempfile
import threading
import time
import traceback

from .forwards import STATUS_CODES
from .state import (INVALID_PARAMS, METHOD_NOT_FOUND, PUBKEY_RE, SCID_RE, SimRpcError,
                    badparam)

FEERATES = {"opening": 7500, "mutual_close": 3750, "unilateral_close": 11000,
            "unilateral_anchor_close": 3750, "penalty": 7500, "splice": 7505,
            "min_acceptable": 1875, "max_acceptable": 150000, "floor": 253}
ESTIMATES = [(2, 15000), (6, 11000), (12, 7500), (100, 3750)]
ONCHAIN_ESTIMATES = {"opening_channel_satoshis": 5265, "mutual_close_satoshis": 2523,
                     "unilateral_close_satoshis": 4170,
                     "unilateral_close_nonanchor_satoshis": 6578,
                     "htlc_timeout_satoshis": 7293, "htlc_success_satoshis": 7733}
WAIT_SUBSYSTEMS = ("invoices", "forwards", "sendpays", "htlcs", "chainmoves", "channelmoves",
                   "networkevents")
UNKNOWN_PARAM = ("unknown parameter: {}, this may be caused by a failure to autodetect "
                 "key=value-style parameters. Please try using the -k flag and explicit "
                 "key=value pairs of parameters.")


# ---- parameter binding and parsing (common/json_param.c) --------------------
def bind(spec, params):
    """Map params (list or dict) onto spec [(name, required)], CLN-style errors."""
    names = [n for n, _ in spec]
    if params is None:
        params = {}
    if isinstance(params, list):
        if len(params) > len(spec):
            raise SimRpcError(INVALID_PARAMS, f"too many parameters: got {len(params)}, "
                                              f"expected {len(spec)}")
        args = {names[i]: v for i, v in enumerate(params) if v is not None}
    elif isinstance(params, dict):
        for key in params:
            if key not in names:
                raise SimRpcError(INVALID_PARAMS, UNKNOWN_PARAM.format(key))
        args = {k: v for k, v in params.items() if v is not None}
    else:
        raise SimRpcError(-32600, "Expected array or object for params")
    for name, required in spec:
        if required and name not in args:
            raise SimRpcError(INVALID_PARAMS, f"missing required parameter: {name}")
    return args


def p_u64(name, val, bits=64):
    if isinstance(val, str) and val.isdigit():
        val = int(val)
    if isinstance(val, bool) or not isinstance(val, int) or not 0 <= val < 2 ** bits:
        raise badparam(name, f"should be an unsigned {bits} bit integer", val)
    return val


def p_scid(name, val):
    if not isinstance(val, str) or not SCID_RE.match(val):
        raise badparam(name, "should be a short_channel_id of form NxNxN", val)
    return val


def p_msat(name, val):
    if isinstance(val, int) and not isinstance(val, bool) and val >= 0:
        return val
    m = re.match(r"^(\d+)(msat|sat|btc)?$", val) if isinstance(val, str) else None
    if not m:
        raise badparam(name, "should be a millisatoshi amount", val)
    return int(m.group(1)) * {"msat": 1, None: 1, "sat": 1000, "btc": 10 ** 11}[m.group(2)]


def p_bool(name, val):
    if isinstance(val, bool):
        return val
    if val in ("true", "false"):
        return val == "true"
    raise badparam(name, "should be 'true' or 'false'", val)


def p_enum(name, val, allowed, msg):
    if val not in allowed:
        raise badparam(name, msg, val)
    return val


def old_amounts(obj):
    """Pre-v23 shapes: every *_msat number becomes a "<n>msat" string."""
    if isinstance(obj, dict):
        return {k: f"{v}msat" if k.endswith("_msat") and isinstance(v, int)
                and not isinstance(v, bool) else old_amounts(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [old_amounts(v) for v in obj]
    return obj


# ---- built-in methods ---------------------------------------------------
def h_getinfo(node, a, old):
    return node.state.getinfo(node.lightning_dir, node.forwards.fees_collected_msat)


def h_listpeerchannels(node, a, old):
    if "id" in a and (not isinstance(a["id"], str) or not PUBKEY_RE.match(a["id"])):
        raise badparam("id", "should be a node id", a["id"])
    if "short_channel_id" in a:
        p_scid("short_channel_id", a["short_channel_id"])
    if len(a) > 1:
        raise SimRpcError(INVALID_PARAMS, "Must not specify more than one of short_channel_id, "
                                          "channel_id or id")
    return node.state.listpeerchannels(a.get("id"), a.get("short_channel_id"),
                                       a.get("channel_id"))


def h_listchannels(node, a, old):
    """As plugins/topology.c json_listchannels: at most one of the three filters."""
    scid = p_scid("short_channel_id", a["short_channel_id"]) if "short_channel_id" in a else None
    for name in ("source", "destination"):
        if name in a and (not isinstance(a[name], str) or not PUBKEY_RE.match(a[name])):
            raise badparam(name, "should be a node id", a[name])
    if len(a) > 1:
        raise SimRpcError(INVALID_PARAMS, "Can only specify one of `short_channel_id`, `source` or "
                                          "`destination`")
    return node.state.listchannels(scid, a.get("source"), a.get("destination"))


def h_listforwards(node, a, old):
    status = a.get("status")
    if status is not None:
        p_enum("status", status, STATUS_CODES, "Unrecognized status")
    in_ch = p_scid("in_channel", a["in_channel"]) if "in_channel" in a else None
    out_ch = p_scid("out_channel", a["out_channel"]) if "out_channel" in a else None
    index = a.get("index")
    if index is not None:
        p_enum("index", index, ("created", "updated", "deleted"), "unknown index")
    start = p_u64("start", a.get("start", 0))
    limit = p_u64("limit", a["limit"], 32) if "limit" in a else None
    if start and index is None:
        raise SimRpcError(INVALID_PARAMS, "Can only specify {start} with {index}")
    if limit is not None and index is None:
        raise SimRpcError(INVALID_PARAMS, "Can only specify {limit} with {index}")
    if (in_ch or out_ch) and start:
        raise SimRpcError(INVALID_PARAMS, "Cannot use start with in_channel or out_channel")
    return {"forwards": node.forwards.listforwards(status, in_ch, out_ch, index, start, limit,
                                                   old=old)}


def h_wait(node, a, old):
    sub = p_enum("subsystem", a["subsystem"], WAIT_SUBSYSTEMS, "unknown subsystem")
    idx = p_enum("indexname", a["indexname"], ("created", "updated", "deleted"), "unknown index")
    nextvalue = p_u64("nextvalue", a["nextvalue"])
    if sub == "forwards":
        return node.forwards.wait(idx, nextvalue, node.wait_timeout)
    if nextvalue > 0:  # nothing else ever happens on this node
        node.stopping.wait(node.wait_timeout)
    return {"subsystem": sub, idx: 0}


def h_listfunds(node, a, old):
    if "spent" in a:
        p_bool("spent", a["spent"])
    return node.state.listfunds()


def h_setchannel(node, a, old):
    feebase = p_msat("feebase", a["feebase"]) if "feebase" in a else None
    feeppm = p_u64("feeppm", a["feeppm"], 32) if "feeppm" in a else None
    htlcmin = p_msat("htlcmin", a["htlcmin"]) if "htlcmin" in a else None
    htlcmax = p_msat("htlcmax", a["htlcmax"]) if "htlcmax" in a else None
    if "enforcedelay" in a:
        p_u64("enforcedelay", a["enforcedelay"], 32)
    ign = p_bool("ignorefeelimits", a["ignorefeelimits"]) if "ignorefeelimits" in a else None
    return node.state.setchannel(a["id"], feebase, feeppm, htlcmin, htlcmax, ign)


def h_plugin(node, a, old):
    sub = p_enum("subcommand", a["subcommand"], ("list", "stop", "start", "startdir",
                                                 "rescan"), "unknown subcommand")
    if sub == "stop":
        name = os.path.basename(str(a.get("plugin", "")))
        if name in node.state.loaded:
            node.set_plugin_loaded(name, False)
            return {"command": "stop", "result": f"Successfully stopped {name}."}
        raise SimRpcError(-3, f"Could not find plugin {a.get('plugin')}")
    if sub != "list":
        raise SimRpcError(-3, f"plugin {sub} is not simulated")
    return node.state.plugin_list(node.started_plugins())


def h_feerates(node, a, old):
    style = p_enum("style", a["style"], ("perkw", "perkb"), "should be 'perkw' or 'perkb'")
    mult = 4 if style == "perkb" else 1
    rates = {k: v * mult for k, v in FEERATES.items()}
    rates["estimates"] = [{"blockcount": b, "feerate": f * mult, "smoothed_feerate": f * mult}
                          for b, f in ESTIMATES]
    return {style: rates, "onchain_fee_estimates": dict(ONCHAIN_ESTIMATES)}


def h_setconfig(node, a, old):
    """As lightningd/configs.c: only an option its plugin registered `dynamic`, with a value
    unless it is a flag; the plugin checks the value and its error (code and message, nothing
    else) is the caller's answer, the old value kept. On success the value is the option's
    from then on (lightningd also writes it to its config file)."""
    plugin = node.plugin_for_option(a["config"])
    if plugin is None:
        raise badparam("config", "Unknown config option", a["config"])
    option = next(o for o in plugin.manifest.get("options", []) if o.get("name") == a["config"])
    if not option.get("dynamic"):
        raise badparam("config", "Not a dynamic config option", a["config"])
    val = a.get("val")
    if val is None and option.get("type") != "flag":
        raise SimRpcError(INVALID_PARAMS, f"{a['config']} requires a value")
    plugin.setconfig(a["config"], val)
    line = f"{a['config']}={val}" if val is not None else a["config"]
    shown = {"value_str": str(val)} if option.get("type", "string") == "string" else {"set": True}
    return {"config": dict({"config": a["config"]}, **shown, source=append_config(node, line),
                           plugin=plugin.path, dynamic=True)}


def append_config(node, line):
    """lightningd appends a value set by setconfig to its config file: returns "file:line"."""
    path = os.path.join(node.lightning_dir, "config")
    with open(path, "a+") as f:
        f.seek(0)
        lines = f.read().count("\n")
        f.write(f"# Inserted by setconfig {time.ctime()}\n{line}\n")
    return f"{path}:{lines + 2}"


BUILTINS = {
    "getinfo": ([], h_getinfo),
    "listpeerchannels": ([("id", 0), ("short_channel_id", 0), ("channel_id", 0)],
                         h_listpeerchannels),
    "listchannels": ([("short_channel_id", 0), ("source", 0), ("destination", 0)], h_listchannels),
    "listforwards": ([("status", 0), ("in_channel", 0), ("out_channel", 0), ("index", 0),
                      ("start", 0), ("limit", 0)], h_listforwards),
    "wait": ([("subsystem", 1), ("indexname", 1), ("nextvalue", 1)], h_wait),
    "listfunds": ([("spent", 0)], h_listfunds),
    "setchannel": ([("id", 1), ("feebase", 0), ("feeppm", 0), ("htlcmin", 0), ("htlcmax", 0),
                    ("enforcedelay", 0), ("ignorefeelimits", 0)], h_setchannel),
    "plugin": ([("subcommand", 1), ("plugin", 0), ("options", 0)], h_plugin),
    "feerates": ([("style", 1)], h_feerates),
    "notifications": ([("enable", 1)], lambda node, a, old: {}),
    "setconfig": ([("config", 1), ("val", 0), ("transient", 0)], h_setconfig),
}


def h_clboss_unmanage(node, params):
    a = bind([("nodeid", 1), ("tags", 0)], params)
    node.state.clboss_unmanaged[a["nodeid"]] = a.get("tags", "")
    return {}


# ---- dispatch -----------------------------------------------------------
def dispatch(node, method, params, client_id=None):
    """Answer one request: returns a dict with either "result" or "error"."""
    node.state.record_call(method, params)
    fault = node.state.take_fault(method, params)
    old = False
    if fault:
        if fault["kind"] == "error":
            return {"error": SimRpcError(fault.get("code", -1), fault.get("message", "fault"),
                                         fault.get("data")).to_json()}
        if fault["kind"] == "hang":
            node.stopping.wait(fault.get("seconds", 3600))
        old = fault["kind"] == "old_shapes"
    try:
        resp = call_method(node, method, params, old, client_id)
    except SimRpcError as err:
        return {"error": err.to_json()}
    except Exception as exc:  # a simulator bug: answer so the client never hangs on it
        if not node.stopping.is_set():  # (during close the db may already be gone)
            traceback.print_exc()
        return {"error": {"code": -32603, "message": f"simnode internal error: {exc!r}"}}
    if old and "result" in resp:
        resp["result"] = old_amounts(resp["result"])
    return resp


def call_method(node, method, params, old, client_id):
    """Built-in, fake sling/clboss, or a started plugin's method (relayed as lightningd does)."""
    if method in BUILTINS:
        spec, handler = BUILTINS[method]
        if old and method == "listforwards":  # old CLN: no index/start/limit parameters
            spec = spec[:3]
        return {"result": handler(node, bind(spec, params), old)}
    if method.startswith("sling-") and "sling" in node.state.loaded:
        result = node.sling.call(method, params)
        if result is not None:
            return {"result": result}
    if method == "clboss-unmanage" and "clboss" in node.state.loaded:
        return {"result": h_clboss_unmanage(node, params)}
    plugin = node.plugin_for_method(method)
    if plugin is not None:
        resp = plugin.forward(method, params, client_id)
        return {k: v for k, v in resp.items() if k in ("result", "error")}
    raise SimRpcError(METHOD_NOT_FOUND, f"Unknown command '{method}'")


# ---- socket server --------------------------------------------------------
class RpcServer:
    def __init__(self, node, path):
        self.node, self.path = node, path
        self._short_dir = None
        self._conns = set()
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if len(path.encode()) > 100:  # sun_path limit: bind short, link the long name to it
            self._short_dir = tempfile.mkdtemp(prefix="simnode")
            bind_path = os.path.join(self._short_dir, "lightning-rpc")
            self.sock.bind(bind_path)
            os.symlink(bind_path, path)
        else:
            self.sock.bind(path)
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name="simnode-rpc",
                                        daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self.node.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.settimeout(None)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="simnode-conn").start()

    def _serve(self, conn):
        decoder = json.JSONDecoder()
        buf = b""
        try:
            while not self.node.stopping.is_set():
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    text = buf.lstrip()
                    if not text:
                        buf = b""
                        break
                    try:
                        decoded = text.decode("utf-8")
                        req, end = decoder.raw_decode(decoded)
                    except ValueError:  # incomplete (or bad) JSON: wait for more bytes
                        buf = text
                        break
                    buf = decoded[end:].encode("utf-8")
                    self._answer(conn, req)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, conn, req):
        if not isinstance(req, dict) or "id" not in req:
            return  # notifications from clients need no answer
        resp = dispatch(self.node, str(req.get("method")), req.get("params"), req["id"])
        resp = dict({"jsonrpc": "2.0", "id": req["id"]}, **resp)
        conn.sendall(json.dumps(resp).encode("utf-8") + b"\n\n")

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2)
        for p in (self.path, self._short_dir and os.path.join(self._short_dir, "lightning-rpc")):
            if p and os.path.lexists(p):
                os.unlink(p)
        if self._short_dir:
            os.rmdir(self._short_dir)
