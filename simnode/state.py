"""Node state of the simulated Core Lightning node.

Holds channels, on-chain funds, loaded (fake) plugins, injected faults and the
log of RPC calls, and renders the channel-related RPC results in the shapes of
Core Lightning v26.06 (see /work/shared/cln-samples).  All access goes through
one re-entrant lock because the RPC server answers from many threads.
"""
import hashlib
import json
import random
import re
import threading
import time

VERSION = "v26.06.6"
BLOCKHEIGHT = 900_000
SCID_RE = re.compile(r"^\d+x\d+x\d+$")
PUBKEY_RE = re.compile(r"^0[23][0-9a-f]{64}$")
# What CLN v26 reports for an anchors channel (copied from the l2 sample).
CHANNEL_TYPE = {"bits": [12, 22], "names": ["static_remotekey/even", "anchors/even"]}
FEATURES = ["option_static_remotekey", "option_anchors"]
FEATURE_SET = {"init": "800898880a8a59a1", "node": "808898880a8a59a1", "channel": "",
               "invoice": "02000002024100"}
# The opener pays this much commitment-tx fee buffer (l2 sample: to_us - reserve - spendable).
COMMIT_FEE_MSAT = 11_295_000
NORMAL_STATES = ("CHANNELD_NORMAL", "CHANNELD_AWAITING_SPLICE")
ACTIVE_STATES = NORMAL_STATES + ("CHANNELD_SHUTTING_DOWN", "CLOSINGD_SIGEXCHANGE")
PENDING_STATES = ("CHANNELD_AWAITING_LOCKIN", "DUALOPEND_AWAITING_LOCKIN", "DUALOPEND_OPEN_INIT",
                  "OPENINGD")
FAKE_PLUGIN_DIR = "/home/operator/.lightning/plugins"
BUILTIN_PLUGINS = ["autoclean", "chanbackup", "bcli", "commando", "funder", "topology",
                   "keysend", "offers", "pay", "recover", "txprepare", "cln-xpay",
                   "cln-askrene", "sql", "bookkeeper"]
LIGHTNINGD = -1          # CLN's generic error code
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601


class SimRpcError(Exception):
    """A JSON-RPC error answer: code, message and optional data, as CLN sends them."""

    def __init__(self, code, message, data=None):
        super().__init__(f"RPC error {code}: {message}")
        self.code, self.message, self.data = code, message, data

    def to_json(self):
        err = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def make_pubkey(seed):
    """Deterministic 33-byte compressed-pubkey-looking hex from a seed string."""
    digest = sha256_hex(seed)
    return ("02" if int(digest[0], 16) % 2 == 0 else "03") + sha256_hex(digest)


def badparam(name, msg, value):
    """CLN's command_fail_badparam text (developer-mode form, as in the samples)."""
    return SimRpcError(INVALID_PARAMS, f"{name}: {msg}: invalid token '{json.dumps(value)}'")


def balance_holdbacks(ch):
    """(msat of our side that cannot be sent, msat of theirs that cannot be received, largest
    HTLC): the reserve plus, for the opener, the commitment fee buffer. The market simulator
    (simnode/market.py) uses the same rule to decide whether a forward fits."""
    local_fee = COMMIT_FEE_MSAT if ch["opener"] == "local" else 0
    return (ch["our_reserve_msat"] + local_fee,
            ch["their_reserve_msat"] + COMMIT_FEE_MSAT - local_fee, ch["htlc_max_msat"])


def htlc_max_possible_msat(ch):
    """lightningd's htlc_max_possible_send: the capacity less the reserve the peer makes us
    keep (their max in flight is unlimited here); also the channel's initial htlc max."""
    return max(0, ch["capacity_msat"] - ch["our_reserve_msat"])


class NodeState:
    def __init__(self, node_id=None, alias="SIMNODE-" + VERSION):
        self.lock = threading.RLock()
        self.node_id = node_id or make_pubkey("simnode")
        self.alias = alias
        self.blockheight = BLOCKHEIGHT
        self.channels = {}          # scid -> record (insertion order = listing order)
        self.closed = {}            # scid -> record of channels gone from listpeerchannels
        self.funds_onchain_msat = 0
        self.loaded = set()         # fake plugins: "sling", "clboss"
        self.clboss_unmanaged = {}  # nodeid -> tags string
        self._faults = {}
        self.faults_injected = {}   # (method, kind) -> count of faults actually applied
        self._calls = []
        self._seq = 0
        self.network_channels = {}  # peer id -> gossip of other nodes' channels into it

    # ---- channels -------------------------------------------------------
    def add_channel(self, capacity_sats=1_000_000, local_sats=500_000, fee_ppm=100,
                    fee_base_msat=1, opener="local", peer_id=None, scid=None, htlcs_in_use=0,
                    max_htlcs=483, connected=True, state="CHANNELD_NORMAL", private=False,
                    remote_fee_ppm=None, remote_fee_base_msat=1000):
        if opener not in ("local", "remote"):
            raise ValueError("opener must be 'local' or 'remote'")
        if not 0 <= local_sats <= capacity_sats:
            raise ValueError("local_sats must be within 0..capacity_sats")
        with self.lock:
            self._seq += 1
            n = self._seq
            scid = scid or f"{800000 + 7 * n}x{12 + n}x0"
            if not SCID_RE.match(scid) or scid in self.channels:
                raise ValueError(f"bad or duplicate scid {scid}")
            peer_id = peer_id or make_pubkey(f"peer-{n}")
            if not PUBKEY_RE.match(peer_id):
                raise ValueError(f"bad peer_id {peer_id}")
            capacity_msat = capacity_sats * 1000
            reserve = max(capacity_msat // 100, 546_000)  # 1% reserve, never below dust
            self.channels[scid] = {
                "scid": scid, "peer_id": peer_id, "channel_id": sha256_hex(f"cid-{scid}"),
                "funding_txid": sha256_hex(f"txid-{scid}"), "capacity_msat": capacity_msat,
                "local_msat": local_sats * 1000, "fee_base_msat": fee_base_msat,
                "fee_ppm": fee_ppm, "opener": opener, "private": private,
                "connected": connected, "state": state, "htlcs_in_use": htlcs_in_use,
                "max_htlcs": max_htlcs, "our_reserve_msat": reserve,
                "their_reserve_msat": reserve, "htlc_min_msat": 0,
                "htlc_max_msat": capacity_msat - reserve, "cltv_delta": 34,
                "ignore_fee_limits": False,
                "remote_fee_ppm": remote_fee_ppm if remote_fee_ppm is not None
                else 10 + int(sha256_hex(scid)[:4], 16) % 990,
                "remote_fee_base_msat": remote_fee_base_msat,
                "alias_local": f"{3000000 + n}x{1000 + n}x{n}",
                "alias_remote": f"{4000000 + n}x{2000 + n}x{n}",
                "opened_at": time.time(), "direction": 0 if self.node_id < peer_id else 1,
                "counters": dict.fromkeys(
                    ["in_payments_offered", "in_offered_msat", "in_payments_fulfilled",
                     "in_fulfilled_msat", "out_payments_offered", "out_offered_msat",
                     "out_payments_fulfilled", "out_fulfilled_msat"], 0),
            }
            return scid

    def channel(self, scid):
        with self.lock:
            if scid in self.channels:
                return self.channels[scid]
            if scid in self.closed:
                return self.closed[scid]
            raise KeyError(f"no channel {scid}")

    def close_channel(self, scid, keep_onchain=False):
        with self.lock:
            ch = self.channels[scid]
            ch["connected"] = False
            ch["state"] = "ONCHAIN"
            ch["closer"] = "local"
            if not keep_onchain:
                self.closed[scid] = self.channels.pop(scid)

    def set_balance(self, scid, local_msat):
        with self.lock:
            ch = self.channels[scid]
            if not 0 <= local_msat <= ch["capacity_msat"]:
                raise ValueError("local_msat outside 0..capacity")
            ch["local_msat"] = int(local_msat)

    def move(self, scid, delta_msat):
        """Shift our balance by delta (clamped to the channel), used by sling and forwards."""
        with self.lock:
            ch = self.channels[scid]
            ch["local_msat"] = min(ch["capacity_msat"], max(0, ch["local_msat"] + delta_msat))

    def fee_policies(self):
        with self.lock:
            return {s: (c["fee_ppm"], c["fee_base_msat"]) for s, c in self.channels.items()}

    # ---- faults and call log -------------------------------------------
    def set_fault(self, method, kind, **kw):
        """kind "random" draws each call: an error with probability error_rate, else a
        hang of `seconds` (a number or a (low, high) range) with probability hang_rate,
        else a normal answer; seed makes the draws repeatable."""
        if kind not in ("error", "hang", "old_shapes", "random"):
            raise ValueError(f"unknown fault kind {kind}")
        if kind == "random":
            rates = (kw.get("error_rate", 0.0), kw.get("hang_rate", 0.0))
            if min(rates) < 0 or sum(rates) > 1:
                raise ValueError("error_rate and hang_rate must be >= 0 and add up to at most 1")
            kw["rng"] = random.Random(kw.pop("seed", None))
        with self.lock:
            self._faults[method] = dict(kw, kind=kind)

    def clear_faults(self, method=None):
        with self.lock:
            if method is None:
                self._faults.clear()
            else:
                self._faults.pop(method, None)

    def take_fault(self, method, params=None):
        """The fault for this call, if any; a fault with times=N clears itself after N uses;
        one with when=predicate applies only to calls whose params it accepts. A random
        fault is resolved here into an error, a hang or nothing."""
        with self.lock:
            fault = self._faults.get(method)
            if fault and "when" in fault and not fault["when"](params):
                return None
            if fault and "times" in fault:
                fault["times"] -= 1
                if fault["times"] <= 0:
                    del self._faults[method]
            if fault and fault["kind"] == "random":
                fault = self._draw(fault)
            if fault:
                key = (method, fault["kind"])
                self.faults_injected[key] = self.faults_injected.get(key, 0) + 1
            return dict(fault) if fault else None

    @staticmethod
    def _draw(fault):
        rng = fault["rng"]
        x = rng.random()
        if x < fault.get("error_rate", 0.0):
            return {"kind": "error", "code": fault.get("code", -1),
                    "message": fault.get("message", "injected fault")}
        if x < fault.get("error_rate", 0.0) + fault.get("hang_rate", 0.0):
            seconds = fault.get("seconds", 1.0)
            if isinstance(seconds, (tuple, list)):
                seconds = rng.uniform(*seconds)
            return {"kind": "hang", "seconds": seconds}
        return None

    def record_call(self, method, params):
        with self.lock:
            self._calls.append((method, params))

    def calls(self):
        with self.lock:
            return list(self._calls)

    def clear_calls(self):
        with self.lock:
            self._calls.clear()

    # ---- rendering ------------------------------------------------------
    def _spendable(self, ch):
        """As lightningd's channel_amount_spendable / _receivable: the balance less what is
        held back; not capped by the htlc maximum we advertise (that limits forwards only)."""
        if ch["state"] not in NORMAL_STATES:
            return 0, 0
        held_local, held_remote, _ = balance_holdbacks(ch)
        spendable = max(0, ch["local_msat"] - held_local)
        receivable = max(0, ch["capacity_msat"] - ch["local_msat"] - held_remote)
        return spendable, receivable

    def _htlcs(self, ch):
        out = []
        for i in range(ch["htlcs_in_use"]):
            inbound = i % 2 == 0
            out.append({"direction": "in" if inbound else "out", "id": i // 2,
                        "amount_msat": 100_000 * (i + 1), "expiry": self.blockheight + 40 + i,
                        "payment_hash": sha256_hex(f"htlc-{ch['scid']}-{i}"),
                        "state": "RCVD_ADD_ACK_REVOCATION" if inbound
                        else "SENT_ADD_ACK_REVOCATION"})
        return out

    def _updates(self, ch):
        local = {"htlc_minimum_msat": ch["htlc_min_msat"], "htlc_maximum_msat": ch["htlc_max_msat"],
                 "cltv_expiry_delta": ch["cltv_delta"], "fee_base_msat": ch["fee_base_msat"],
                 "fee_proportional_millionths": ch["fee_ppm"]}
        remote = dict(local, fee_base_msat=ch["remote_fee_base_msat"],
                      fee_proportional_millionths=ch["remote_fee_ppm"])
        return {"local": local, "remote": remote}

    def _status_line(self, ch):
        if ch["state"] == "ONCHAIN":
            return "ONCHAIN:All outputs resolved: waiting 100 more blocks before forgetting channel"
        if not ch["connected"]:
            return f"{ch['state']}:Will attempt reconnect in 300 seconds"
        return f"{ch['state']}:Channel ready for use."

    def render_channel(self, ch):
        """One listpeerchannels entry, field order and presence as in l2_listpeerchannels.json."""
        spendable, receivable = self._spendable(ch)
        cap, local = ch["capacity_msat"], ch["local_msat"]
        entry = {"peer_id": ch["peer_id"], "peer_connected": ch["connected"]}
        if ch["connected"]:
            entry["reestablished"] = True
        entry.update({
            "channel_type": CHANNEL_TYPE, "updates": self._updates(ch), "state": ch["state"],
            "scratch_txid": sha256_hex(f"scratch-{ch['scid']}"), "last_tx_fee_msat": 4751000,
            "lost_state": False, "feerate": {"perkw": 3755, "perkb": 15020}})
        if ch["connected"]:
            entry["owner"] = "channeld"
        entry.update({
            "short_channel_id": ch["scid"], "direction": ch["direction"],
            "channel_id": ch["channel_id"], "funding_txid": ch["funding_txid"],
            "funding_outnum": 0,
            "close_to_addr": "bcrt1p" + sha256_hex(f"close-{ch['scid']}")[:58],
            "close_to": "5120" + sha256_hex(f"closeto-{ch['scid']}"),
            "private": ch["private"], "opener": ch["opener"]})
        if "closer" in ch:
            entry["closer"] = ch["closer"]
        local_funds = cap if ch["opener"] == "local" else 0
        entry.update({
            "alias": {"local": ch["alias_local"], "remote": ch["alias_remote"]},
            "features": FEATURES,
            "funding": {"local_funds_msat": local_funds, "remote_funds_msat": cap - local_funds,
                        "pushed_msat": 0, "withheld": False},
            "to_us_msat": local, "min_to_us_msat": local, "max_to_us_msat": local,
            "total_msat": cap, "fee_base_msat": ch["fee_base_msat"],
            "fee_proportional_millionths": ch["fee_ppm"], "dust_limit_msat": 546000,
            "their_max_htlc_value_in_flight_msat": 18446744073709551615,
            "our_max_htlc_value_in_flight_msat": 18446744073709551615,
            "their_reserve_msat": ch["their_reserve_msat"],
            "our_reserve_msat": ch["our_reserve_msat"], "spendable_msat": spendable,
            "receivable_msat": receivable, "minimum_htlc_in_msat": 0,
            "minimum_htlc_out_msat": ch["htlc_min_msat"],
            "maximum_htlc_out_msat": ch["htlc_max_msat"], "their_to_self_delay": 144,
            "our_to_self_delay": 144, "max_accepted_htlcs": ch["max_htlcs"],
            "state_changes": [{"timestamp": _iso(ch["opened_at"]),
                               "old_state": "CHANNELD_AWAITING_LOCKIN",
                               "new_state": "CHANNELD_NORMAL",
                               "cause": "user" if ch["opener"] == "local" else "remote",
                               "message": "Lockin complete"}],
            "status": [self._status_line(ch)]})
        entry.update(ch["counters"])
        entry["htlcs"] = self._htlcs(ch)
        return entry

    def listpeerchannels(self, peer_id=None, scid=None, channel_id=None):
        with self.lock:
            chans = list(self.channels.values())
            if peer_id:
                chans = [c for c in chans if c["peer_id"] == peer_id]
            if scid:
                chans = [c for c in chans if c["scid"] == scid]
            if channel_id:
                chans = [c for c in chans if c["channel_id"] == channel_id]
            return {"channels": [self.render_channel(c) for c in chans]}

    # ---- gossip (listchannels) ---------------------------------------------------
    def set_network_fees(self, peer_id, fees_ppm, active=True, base_fee_msat=1000):
        """Other nodes' channels into peer_id as gossip has them, one per fee (replacing
        those set before); active: one bool for all, or one per fee."""
        if not PUBKEY_RE.match(peer_id):
            raise ValueError(f"bad peer_id {peer_id}")
        flags = [active] * len(fees_ppm) if isinstance(active, bool) else list(active)
        if len(flags) != len(fees_ppm):
            raise ValueError("one active flag per fee")
        with self.lock:
            self.network_channels[peer_id] = [
                {"source": make_pubkey(f"net-{peer_id}-{i}"), "destination": peer_id,
                 "scid": f"{700000 + i}x{int(sha256_hex(peer_id)[:4], 16)}x{i % 4}",
                 "capacity_msat": (1 + i % 5) * 1_000_000_000, "active": bool(on),
                 "fee_base_msat": base_fee_msat, "fee_ppm": int(fee), "cltv_delta": 80,
                 "last_update": int(time.time()) - 3600 * (1 + i)}
                for i, (fee, on) in enumerate(zip(fees_ppm, flags))]

    def _gossip_entries(self):
        """Every channel direction gossip knows: both of each of ours (ours when the
        channel is usable, the peer's as its remote update says) and the others set."""
        out = []
        for ch in self.channels.values():
            if ch["state"] not in NORMAL_STATES:
                continue
            usable = ch["connected"]
            common = {"scid": ch["scid"], "capacity_msat": ch["capacity_msat"],
                      "public": not ch["private"], "cltv_delta": ch["cltv_delta"],
                      "last_update": int(ch["opened_at"])}
            out.append(dict(common, source=self.node_id, destination=ch["peer_id"], active=usable,
                            fee_base_msat=ch["fee_base_msat"], fee_ppm=ch["fee_ppm"],
                            htlc_min_msat=ch["htlc_min_msat"], htlc_max_msat=ch["htlc_max_msat"]))
            out.append(dict(common, source=ch["peer_id"], destination=self.node_id, active=usable,
                            fee_base_msat=ch["remote_fee_base_msat"], fee_ppm=ch["remote_fee_ppm"]))
        for chans in self.network_channels.values():
            out.extend(chans)
        return out

    def render_gossip(self, g):
        """One listchannels entry, fields and order as CLN v26's topology plugin has them."""
        direction = 0 if g["source"] < g["destination"] else 1
        return {"source": g["source"], "destination": g["destination"],
                "short_channel_id": g["scid"], "direction": direction,
                "public": g.get("public", True), "amount_msat": g["capacity_msat"],
                "message_flags": 1, "channel_flags": direction | (0 if g["active"] else 2),
                "active": g["active"], "last_update": g["last_update"],
                "base_fee_millisatoshi": g["fee_base_msat"], "fee_per_millionth": g["fee_ppm"],
                "delay": g["cltv_delta"], "htlc_minimum_msat": g.get("htlc_min_msat", 0),
                "htlc_maximum_msat": g.get("htlc_max_msat", g["capacity_msat"] * 99 // 100),
                "features": ""}

    def listchannels(self, scid=None, source=None, destination=None):
        with self.lock:
            entries = [g for g in self._gossip_entries()
                       if (scid is None or g["scid"] == scid)
                       and (source is None or g["source"] == source)
                       and (destination is None or g["destination"] == destination)]
            return {"channels": [self.render_gossip(g) for g in entries]}

    def listfunds(self):
        with self.lock:
            outputs = []
            if self.funds_onchain_msat:
                txid = sha256_hex("onchain-funds")
                outputs.append({
                    "txid": txid, "output": 1, "amount_msat": int(self.funds_onchain_msat),
                    "scriptpubkey": "5120" + sha256_hex("spk"),
                    "address": "bcrt1p" + sha256_hex("addr")[:58], "status": "confirmed",
                    "blockheight": self.blockheight - 100, "reserved": False})
            chans = [{"peer_id": c["peer_id"], "connected": c["connected"], "state": c["state"],
                      "channel_id": c["channel_id"], "short_channel_id": c["scid"],
                      "our_amount_msat": c["local_msat"], "amount_msat": c["capacity_msat"],
                      "funding_txid": c["funding_txid"], "funding_output": 0}
                     for c in self.channels.values()]
            return {"outputs": outputs, "channels": chans}

    def getinfo(self, lightning_dir, fees_collected_msat):
        with self.lock:
            chans = list(self.channels.values())
            # getinfo counts by state only (peer_control.c json_getinfo), connected or not
            pending = sum(c["state"] in PENDING_STATES for c in chans)
            active = sum(c["state"] in ACTIVE_STATES for c in chans)
            return {
                "id": self.node_id, "alias": self.alias, "color": self.node_id[:6],
                "num_peers": len({c["peer_id"] for c in chans}),
                "num_pending_channels": pending, "num_active_channels": active,
                "num_inactive_channels": len(chans) - pending - active, "address": [],
                "binding": [{"type": "ipv4", "address": "127.0.0.1", "port": 9735}],
                "version": VERSION, "blockheight": self.blockheight, "network": "regtest",
                "fees_collected_msat": fees_collected_msat, "lightning-dir": lightning_dir,
                "our_features": FEATURE_SET}

    def _setchannel_targets(self, ident):
        chans = [c for c in self.channels.values() if c["state"] in NORMAL_STATES
                 or c["state"] in PENDING_STATES]
        if ident == "all":
            return chans
        if isinstance(ident, str) and PUBKEY_RE.match(ident):
            found = [c for c in chans if c["peer_id"] == ident]
            if not found:
                raise SimRpcError(LIGHTNINGD,
                                  "Could not find any active channels of peer with that id")
            return found
        if isinstance(ident, str) and re.match(r"^[0-9a-f]{64}$", ident):
            found = [c for c in self.channels.values() if c["channel_id"] == ident]
            if not found:
                raise badparam("id", "Channel id not found", ident)
        elif isinstance(ident, str) and SCID_RE.match(ident):
            found = [c for c in self.channels.values() if c["scid"] == ident]
            if not found:
                raise badparam("id", "Short channel id not found", ident)
        else:
            raise badparam("id", "should be a channel ID or short channel ID", ident)
        if found[0] not in chans:
            raise badparam("id", f"Channel in state {found[0]['state']}", ident)
        return found

    def setchannel(self, ident, feebase=None, feeppm=None, htlcmin=None, htlcmax=None,
                   ignorefeelimits=None):
        """Apply setchannel; amounts already parsed to msat ints.  Shape as l2_setchannel.json."""
        with self.lock:
            if htlcmin is not None and htlcmax is not None and htlcmax < htlcmin:
                raise SimRpcError(LIGHTNINGD, "htlcmax cannot be less than htlcmin")
            result = []
            for ch in self._setchannel_targets(ident):
                # lightningd: never above htlc_max_possible_send (capacity less the reserve
                # we keep), clamped there with a warning
                possible = htlc_max_possible_msat(ch)
                too_high = htlcmax is not None and htlcmax > possible
                for key, val in (("fee_base_msat", feebase), ("fee_ppm", feeppm),
                                 ("htlc_min_msat", htlcmin),
                                 ("htlc_max_msat", possible if too_high else htlcmax),
                                 ("ignore_fee_limits", ignorefeelimits)):
                    if val is not None:
                        ch[key] = val
                entry = {
                    "peer_id": ch["peer_id"], "channel_id": ch["channel_id"],
                    "short_channel_id": ch["scid"], "fee_base_msat": ch["fee_base_msat"],
                    "fee_proportional_millionths": ch["fee_ppm"],
                    "minimum_htlc_out_msat": ch["htlc_min_msat"],
                    "maximum_htlc_out_msat": ch["htlc_max_msat"],
                    "ignore_fee_limits": ch["ignore_fee_limits"]}
                if too_high:
                    entry["warning_htlcmax_too_high"] = "Set maximum_htlc_out_msat to maximum possible in channel"
                result.append(entry)
            return {"channels": result}

    def plugin_list(self, started):
        """`plugin list`: built-ins, fake sling/clboss when loaded, started plugin files."""
        entries = [{"name": f"/usr/local/libexec/c-lightning/plugins/{n}", "active": True,
                    "dynamic": n not in ("bcli", "autoclean", "chanbackup", "commando")}
                   for n in BUILTIN_PLUGINS]
        with self.lock:
            for name in sorted(self.loaded):
                entries.append({"name": f"{FAKE_PLUGIN_DIR}/{name}", "active": True,
                                "dynamic": True})
        for path, dynamic in started:
            entries.append({"name": path, "active": True, "dynamic": dynamic})
        return {"command": "list", "plugins": entries}


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
