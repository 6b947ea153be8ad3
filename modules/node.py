"""The node adapter: the only module that talks to lightningd (and to sling, clboss).

Every read returns typed data with integer msat, whatever the node's version sent
(plain integers since v23.05; "123msat" strings or Millisatoshi objects before).
Every failure surfaces as NodeError with the method, the code and the message.
"""
import dataclasses
import json
import socket
import threading
import time
from typing import Any, Dict, Iterable, List, Optional

from pyln.client import LightningRpc, RpcError

from modules.models import Channel, Forward, SlingWindow
from modules.network_prior import GossipChannel

UNKNOWN_COMMAND = -32601
INVALID_PARAMS = -32602
SLING_ERROR = -32700            # every error sling's handlers return (cln-plugin's parse_error)
SLING_TIMEOUT_REASON = "WAITSENDPAY_TIMEOUT"
# sling-stats task states in which a task makes no payment (a finished once-job is Balanced).
SLING_IDLE_STATES = frozenset({"Stopped", "NotStarted", "Balanced"})


@dataclasses.dataclass(frozen=True)
class SlingTotals:
    moved_msat: int = 0
    fee_paid_msat: int = 0
    successes: int = 0
    failures: int = 0
    reliable: bool = True
    # Payments sling gave up waiting for (WAITSENDPAY_TIMEOUT): their HTLC may still settle,
    # unrecorded. sling lists only its top 5 failure reasons, so: at least / at most.
    timeouts: int = 0
    timeouts_max: int = 0
    # sling's total_spent_sats rounds down (a floored weighted ppm, then to sats): at most this.
    fee_max_msat: int = 0

    def to_dict(self) -> Dict[str, int]:
        return {"moved_msat": self.moved_msat, "fee_paid_msat": self.fee_paid_msat,
                "successes": self.successes, "failures": self.failures, "timeouts": self.timeouts,
                "timeouts_max": self.timeouts_max, "fee_max_msat": self.fee_max_msat}


def sling_fee_bound_msat(successes: Dict[str, Any]) -> int:
    """At least what sling's window of successes paid: total_spent_sats is computed from a
    weighted ppm rounded down, then rounded down to sats; (ppm + 1) over the amount rounded
    up undoes both."""
    if not successes:
        return 0
    amount_msat = (int(successes.get("total_amount_sats", 0)) + 1) * 1000
    ppm = int(successes.get("feeppm_weighted_avg", 0)) + 1
    return max(-(-amount_msat * ppm // 1_000_000), int(successes.get("total_spent_sats", 0)) * 1000)


@dataclasses.dataclass(frozen=True)
class SlingSpend:
    """What sling's stats say one channel's rebalances cost over sling's stats window."""
    fee_bound_msat: int                 # at least what they paid (sling's rounding undone)
    last_rebalance: Optional[float]     # unix seconds; None: no success in the window


class NodeError(Exception):
    """An RPC that failed, timed out or could not be reached."""

    def __init__(self, method: str, code: Optional[int], message: str):
        super().__init__(f"{method}: {message}" + (f" (code {code})" if code is not None else ""))
        self.method = method
        self.code = code
        self.message = message


def to_msat(value: Any) -> int:
    """Integer msat from an int, a "123msat" string, a Millisatoshi or None."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("msat"):
            text = text[:-4]
        return int(text)
    return int(value)  # Millisatoshi implements __int__


def parse_forward(entry: Dict[str, Any]) -> Forward:
    """A listforwards row or a forward_event payload, with amounts normalised."""
    get = entry.get   # called for every forward of a hydration: kept lean
    in_htlc_id, resolved = get("in_htlc_id"), get("resolved_time")
    in_msat, out_msat, fee_msat = get("in_msat", 0), get("out_msat", 0), get("fee_msat", 0)
    return Forward(
        entry["in_channel"],
        None if in_htlc_id is None else int(in_htlc_id),
        get("out_channel"),
        in_msat if type(in_msat) is int else to_msat(in_msat),
        out_msat if type(out_msat) is int else to_msat(out_msat),
        fee_msat if type(fee_msat) is int else to_msat(fee_msat),
        get("status", ""),
        float(get("received_time") or 0.0),
        None if resolved is None else float(resolved),
        get("created_index"),
        get("updated_index"),
        get("failcode"),
    )


def parse_local_time(text: Any) -> Optional[float]:
    """sling's "YYYY-mm-dd HH:MM:SS" (local time) as unix seconds; None when absent or odd."""
    try:
        return time.mktime(time.strptime(str(text), "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def parse_channel(entry: Dict[str, Any]) -> Optional[Channel]:
    scid = entry.get("short_channel_id")
    if not scid:
        return None  # not yet confirmed: nothing can be forwarded over it
    local_updates = (entry.get("updates") or {}).get("local") or {}
    fee_ppm = entry.get("fee_proportional_millionths", local_updates.get("fee_proportional_millionths", 0))
    fee_base = entry.get("fee_base_msat", local_updates.get("fee_base_msat", 0))
    capacity = entry.get("total_msat", entry.get("amount_msat"))
    htlc_max = local_updates.get("htlc_maximum_msat", entry.get("maximum_htlc_out_msat"))
    htlc_min = local_updates.get("htlc_minimum_msat", entry.get("minimum_htlc_out_msat"))
    return Channel(
        short_channel_id=scid,
        peer_id=entry.get("peer_id", ""),
        state=entry.get("state", ""),
        capacity_msat=to_msat(capacity),
        local_msat=to_msat(entry.get("to_us_msat")),
        spendable_msat=to_msat(entry.get("spendable_msat")),
        receivable_msat=to_msat(entry.get("receivable_msat")),
        fee_base_msat=to_msat(fee_base),
        fee_ppm=int(fee_ppm or 0),
        opener=entry.get("opener", "local"),
        htlcs_in_use=len(entry.get("htlcs") or []),
        max_htlcs=int(entry.get("max_accepted_htlcs") or 483),
        peer_connected=bool(entry.get("peer_connected", True)),
        private=bool(entry.get("private", False)),
        htlc_minimum_msat=to_msat(htlc_min),
        htlc_maximum_msat=None if htlc_max is None else to_msat(htlc_max),
        htlc_max_possible_msat=htlc_max_possible_msat(entry, to_msat(capacity)),
    )


def htlc_max_possible_msat(entry: Dict[str, Any], capacity_msat: int) -> Optional[int]:
    """lightningd's ceiling for setchannel's htlcmax (htlc_max_possible_send): the capacity
    less the reserve the peer makes us keep, or the peer's max in flight if smaller."""
    reserve = entry.get("our_reserve_msat")
    if not capacity_msat or reserve is None:
        return None
    possible = max(0, capacity_msat - to_msat(reserve))
    in_flight = entry.get("their_max_htlc_value_in_flight_msat")
    return possible if in_flight is None else min(possible, to_msat(in_flight))


class _LinearReadRpc(LightningRpc):
    """pyln's reader (26.6.6, pinned) re-splits and re-copies its whole buffer on every
    recv, quadratic in the answer's size; this one appends to a bytearray and scans only
    the new bytes. Measured on 1 M forwards: 16-28 % less plugin CPU for hydration, and
    the unpaged fallback for old nodes no longer takes minutes."""

    def _readobj(self, sock, buff=b""):
        buf = bytearray(buff)
        scanned = 0
        while True:
            end = buf.find(b"\n\n", max(0, scanned - 1))
            if end >= 0:
                rest = bytes(buf[end + 2:])
                del buf[end:]
                return json.loads(buf.decode("utf-8")), rest
            scanned = len(buf)
            chunk = sock.recv(1 << 20)
            if not chunk:
                return {"error": "Connection to RPC server lost."}, bytes(buf)
            buf += chunk


class NodeAdapter:
    """Typed access to the node. Thread-safe: each thread gets its own RPC client."""

    def __init__(self, rpc_path: str, timeout_seconds: float = 60.0):
        self.rpc_path = rpc_path
        self.timeout_seconds = timeout_seconds
        self._local = threading.local()
        self._node_id: Optional[str] = None
        # LightningRpc opens one socket per call and sets no timeout; the process-wide
        # default bounds a node (or plugin) that never answers. The plugin process opens
        # no other sockets. Set once: saving and restoring it per call races between threads.
        socket.setdefaulttimeout(timeout_seconds)

    def set_timeout(self, timeout_seconds: float) -> None:
        """A new timeout (an option changed at runtime): for every call that starts after."""
        self.timeout_seconds = timeout_seconds
        socket.setdefaulttimeout(timeout_seconds)

    # --- plumbing ----------------------------------------------------------
    def _rpc(self) -> LightningRpc:
        rpc = getattr(self._local, "rpc", None)
        if rpc is None:
            rpc = _LinearReadRpc(self.rpc_path)
            self._local.rpc = rpc
        return rpc

    def call(self, method: str, params: Any = None) -> Any:
        try:
            return self._rpc().call(method, params)
        except RpcError as e:
            error = e.error if isinstance(e.error, dict) else {"message": str(e.error)}
            raise NodeError(method, error.get("code"), error.get("message", str(error)))
        except (socket.timeout, TimeoutError):
            raise NodeError(method, None, f"no answer within {self.timeout_seconds:g} s")
        except (OSError, ValueError) as e:
            raise NodeError(method, None, f"RPC failed: {e}")

    # --- reads -------------------------------------------------------------
    def list_channels(self) -> List[Channel]:
        result = self.call("listpeerchannels")
        channels = (parse_channel(entry) for entry in result.get("channels", []))
        return [c for c in channels if c is not None]

    def forwards_page(self, index: str, start: int, limit: int) -> List[Dict[str, Any]]:
        """One page of listforwards (raw rows; parse with parse_forward)."""
        result = self.call("listforwards", {"index": index, "start": start, "limit": limit})
        return result.get("forwards", [])

    def all_forwards(self) -> List[Dict[str, Any]]:
        """Every settled and local_failed forward, one call each: for nodes without
        pagination (< v23.11)."""
        return [row for status in ("settled", "local_failed")
                for row in self.call("listforwards", {"status": status}).get("forwards", [])]

    def current_forward_index(self, index: str) -> int:
        """The node's current created/updated counter for forwards (wait returns at once)."""
        result = self.call("wait", {"subsystem": "forwards", "indexname": index, "nextvalue": 0})
        return int(result.get(index, 0))

    def plugin_names(self) -> List[str]:
        result = self.call("plugin", {"subcommand": "list"})
        names = []
        for entry in result.get("plugins", []):
            base = entry.get("name", "").rstrip("/").rsplit("/", 1)[-1]
            if entry.get("active", True):
                names.append(base.rsplit(".", 1)[0] if base.endswith(".py") else base)
        return names

    def node_id(self) -> str:
        """Our own node id (getinfo), read once: it never changes while lightningd runs."""
        if self._node_id is None:
            self._node_id = str(self.call("getinfo").get("id", ""))
        return self._node_id

    def network_fees_ppm(self, peer_id: str) -> List[GossipChannel]:
        """Every channel direction into peer_id that gossip knows (listchannels
        destination=peer_id), ours included: the fee each source charges into the peer."""
        result = self.call("listchannels", {"destination": peer_id})
        channels = result.get("channels") if isinstance(result, dict) else None
        if not isinstance(channels, list):
            raise NodeError("listchannels", None, "an answer this plugin cannot read (no channels list)")
        out = []
        for e in channels:
            # an entry without a readable fee says nothing of the price: skipped, not read as 0
            fee = e.get("fee_per_millionth") if isinstance(e, dict) else None
            if isinstance(fee, bool) or not isinstance(fee, int) or fee < 0 \
                    or e.get("destination", peer_id) != peer_id:
                continue
            out.append(GossipChannel(str(e.get("source", "")), fee, bool(e.get("active", False))))
        return out

    def funds_msat(self) -> Dict[str, int]:
        """On-chain (confirmed, unreserved) and our side of channels, in msat."""
        result = self.call("listfunds")
        onchain = sum(to_msat(o.get("amount_msat")) for o in result.get("outputs", [])
                      if o.get("status") == "confirmed" and not o.get("reserved"))
        channels = sum(to_msat(c.get("our_amount_msat")) for c in result.get("channels", [])
                       if c.get("state") == "CHANNELD_NORMAL")
        return {"onchain_msat": onchain, "channels_msat": channels}

    # --- writes ------------------------------------------------------------
    def set_channel_fee(self, scid: str, fee_ppm: int, fee_base_msat: int,
                        htlc_max_msat: Optional[int] = None) -> Dict[str, Any]:
        """One setchannel (one gossip update): the fee, and the htlc max when given."""
        params = {"id": scid, "feebase": fee_base_msat, "feeppm": fee_ppm}
        if htlc_max_msat is not None:
            params["htlcmax"] = htlc_max_msat
        return self.call("setchannel", params)

    def set_channel_htlc_max(self, scid: str, htlc_max_msat: int) -> Dict[str, Any]:
        """setchannel with the htlc max alone: the fees stay as they are."""
        return self.call("setchannel", {"id": scid, "htlcmax": htlc_max_msat})

    def clboss_unmanage_fees(self, peer_id: str) -> None:
        self.call("clboss-unmanage", {"nodeid": peer_id, "tags": "lnfee"})

    # --- sling ---------------------------------------------------------------
    def sling_jobs(self) -> Dict[str, Dict[str, Any]]:
        """sling-jobsettings: jobs keyed by scid."""
        result = self.call("sling-jobsettings")
        return result if isinstance(result, dict) else {}

    def sling_delete_job(self, job: str) -> Any:
        return self.call("sling-deletejob", {"job": job})

    def sling_once(self, scid: str, amount_sats: int, maxppm: int, total_sats: int,
                   candidates: Iterable[str], source_floor_sats: int) -> Any:
        """A one-time pull of `total_sats` into scid, `amount_sats` per payment; it starts
        at once and sling stops it itself when the total is moved.

        sling leaves min(depleteuptopercent * capacity, depleteuptoamount) in each
        candidate; a percent just under 1 makes the amount the floor that applies. One
        task: one payment at a time.
        """
        return self.call("sling-once", {
            "scid": scid, "direction": "pull", "amount": amount_sats, "maxppm": maxppm,
            "onceamount": total_sats, "candidates": list(candidates),
            "depleteuptopercent": 0.99, "depleteuptoamount": source_floor_sats,
            "paralleljobs": 1,
        })

    def sling_tasks(self) -> Dict[str, List[str]]:
        """sling-stats true: the task states of every job and once-job sling knows of, by
        scid (e.g. ["Rebalancing"]); a once-job sling forgot (restart, deletejob) is absent."""
        rows = self.call("sling-stats", {"json": True}) or []
        return {row["scid"]: [str(s).split(":", 1)[-1] for s in row.get("status") or []]
                for row in rows if isinstance(row, dict) and row.get("scid")}

    def sling_stop(self, scid: str) -> Any:
        return self.call("sling-stop", {"scid": scid})

    def sling_totals(self, scid: str) -> SlingTotals:
        """sling-stats <scid> true, reduced to running totals for that channel.

        sling keeps these per channel over its stats window (30 days by default), not per
        job: a job's own figures are the difference from a reading taken when it started.
        """
        result = self.call("sling-stats", {"scid": scid, "json": True}) or {}
        successes = result.get("successes_in_time_window") or {}
        failures = result.get("failures_in_time_window") or {}
        reasons = {r.get("failure_reason"): int(r.get("failure_count", 0))
                   for r in failures.get("top_5_failure_reasons") or []}
        listed = reasons.get(SLING_TIMEOUT_REASON)
        # Not among the top 5: no more than the 5th reason's count (none when fewer are listed).
        unlisted_max = min(reasons.values()) if len(reasons) >= 5 else 0
        return SlingTotals(
            moved_msat=int(successes.get("total_amount_sats", 0)) * 1000,
            fee_paid_msat=int(successes.get("total_spent_sats", 0)) * 1000,
            successes=int(successes.get("total_rebalances", 0)),
            failures=int(failures.get("total_rebalances_tried", 0)),
            timeouts=listed or 0, timeouts_max=unlisted_max if listed is None else listed,
            fee_max_msat=sling_fee_bound_msat(successes))

    def sling_spend(self, scid: str) -> SlingSpend:
        """sling-stats <scid> true, read for what the channel's rebalances may have cost
        over sling's window (totals only). time_of_last_rebalance is sling's local time
        (same host, same TZ as us: both are lightningd's children)."""
        result = self.call("sling-stats", {"scid": scid, "json": True}) or {}
        successes = result.get("successes_in_time_window") or {}
        return SlingSpend(sling_fee_bound_msat(successes),
                          parse_local_time(successes.get("time_of_last_rebalance")))

    def sling_window(self, scid: str) -> SlingWindow:
        """sling-stats <scid> true, as sling's own figures for the channel over its window."""
        result = self.call("sling-stats", {"scid": scid, "json": True}) or {}
        try:
            successes = result.get("successes_in_time_window") or {}
            failures = result.get("failures_in_time_window") or {}
            window = successes.get("time_window_days", failures.get("time_window_days"))
            return SlingWindow(window_days=None if window is None else int(window),
                               rebalances=int(successes.get("total_rebalances", 0)),
                               moved_sats=int(successes.get("total_amount_sats", 0)),
                               fee_sats=int(successes.get("total_spent_sats", 0)),
                               fee_ppm=int(successes.get("feeppm_weighted_avg", 0)) if successes else None)
        except (AttributeError, TypeError, ValueError) as e:
            raise NodeError("sling-stats", None, f"an answer this plugin cannot read ({e})")
