"""Simulated sling plugin (daywalker90/sling v4.2.1) - RPC shapes as the real one.

Facts read from github.com/daywalker90/sling (README.md, src/lib.rs, src/parse.rs,
src/rpc_sling.rs, src/stats.rs, src/model.rs; Cargo version 4.2.1):

* Errors: sling is a cln-plugin (Rust) plugin; any handler error becomes
  {"code": -32700, "message": "<anyhow chain joined by ': '>", "data": null}
  (cln-plugin lib.rs parse_error), which lightningd relays unchanged.
  Without sling loaded, lightningd answers -32601 "Unknown command 'sling-jobsettings'".
* sling-job takes keyword params only (else "Expected an object! Got [..] instead"); valid
  keys: scid direction amount maxppm outppm target maxhops candidates depleteuptopercent
  depleteuptoamount paralleljobs (else "Invalid argument: <k>").  Messages: "Missing scid",
  "Missing direction", "could not parse flow direction from `<d>`", "Missing amount",
  "amount must be a positive integer", "amount must be greater than 0", "Missing maxppm",
  "maxppm must be an integer", "outppm must be an integer", "target must be a floating
  point", "maxhops must be atleast 2", "depleteuptopercent must be between 0.0 and <1.0",
  "depleteuptoamount must be an integer", "paralleljobs must be atleast 1",
  "Invalid array for candidate list", "Atleast one of outppm and candidatelist must be set.",
  "Channel not found", "candidate <scid> has a pull-job that rebalances in the other
  direction!".  Real sling wants candidates as a JSON array (lightning-cli -k turns
  '["a","b"]' into one); this simulator also accepts a string holding such an array.
  Result: {"result": "success"}.  Re-adding a job for a scid stops and replaces it.
* sling-jobsettings [scid] -> object keyed by scid (sorted), each value the serde form of
  sling's Job struct; optional members appear only when set:
    {"704776x2087x3": {"sat_direction": "Pull", "amount_msat": 100000000, "outppm": 0,
      "maxppm": 300, "candidates": ["704776x2087x5"], "target": 0.8, "maxhops": 6,
      "depleteuptopercent": 0.2, "depleteuptoamount_msat": 2000000000, "paralleljobs": 1}}
  sat_direction is "Pull" / "Push" (Rust variant names); amounts are msat (sats*1000);
  jobs on channels not in CHANNELD_NORMAL are dropped.  Unknown scid: "channel not found".
* sling-go [scid] -> {"tasks_started": n, "tasks_failed_start:": 0} (sic, key has a colon);
  "No jobs found", "Shortchannelid not found in jobs".  A channel with a running once-job
  is skipped (counted in tasks_failed_start:).
* sling-once (keyword params only): sling-job's keys plus "onceamount" (sats), "target"
  refused ("`target` can not be used with `sling-once`"); "Missing onceamount",
  "onceamount must be a positive integer", "onceamount must be greater than 0",
  "onceamount must be a multiple of amount. onceamount: <sat>, amount: <sat>"; then
  "Channel <scid> has not enough capacity to pull <onceamount msat>msat" (receivable, or
  spendable for push), "There is already a job for that scid!" (a sling-job exists),
  "There is already a job for that scid running!".  Result {"result": "started"}; no
  sling-go.  Its tasks pay one `amount` at a time and count every payment before making
  it (under a lock, parallel tasks included), giving it back when it fails, and stop
  ("Balanced") once one more would pass onceamount: what it moves never exceeds
  onceamount, and each payment's effective ppm (rounded up) is <= maxppm.  A failed route
  ends the attempt and it tries again; it runs until done or sling-stop / sling-deletejob.
  Once-jobs are not in sling-jobsettings; `sling-stats true` lists them (normal channels
  only) with their task states; sling-job on that channel fails with "Once-job is
  currently running for this channel" while it runs.  A sling restart forgets them.
* sling-stop [scid] -> {"stopped_count": n};  sling-deletejob job|"all" [delete_stats]
  -> {"result": "success"};  sling-version -> {"version": "v4.2.1"}.
* sling-stats <scid> true -> {"successes_in_time_window": S|null, "failures_in_time_window": F|null}
    S = {"time_window_days": "30", "total_amount_sats", "feeppm_weighted_avg", "feeppm_min",
         "feeppm_max", "feeppm_median", "feeppm_90th_percentile",
         "top_5_channel_partners": [{"scid", "alias", "sats"}], "most_common_hop_count",
         "time_of_last_rebalance": "YYYY-mm-dd HH:MM:SS" (local time),
         "last_channel_partner": scid|null, "total_rebalances", "total_spent_sats"}
    F = {"time_window_days", "total_amount_tried_sats",
         "top_5_failure_reasons": [{"failure_reason", "failure_count"}],
         "top_5_fail_nodes": [{"peer_id", "alias", "count"}], "top_5_channel_partners",
         "most_common_hop_count", "time_of_last_attempt", "total_rebalances_tried"}
  total_spent_sats = int(feeppm_weighted_avg * 1e-6 * total_amount_msat) // 1000.
  sling-stats true (no scid) -> list of {"alias", "scid", "pubkey", "status": ["1:Rebalancing"],
  "rebamount": "1,234,567" (sats, thousands separators), "w_feeppm", "last_route_taken",
  "last_success_reb"}; without json: {"format-hint": "simple", "result": "<table text>"}.
  Task states: Starting Rebalancing Balanced NoCandidates Disconnected ChanNotNormal
  NoRoutes NoCheapRoute Stopping Stopped Error NotStarted.
* Candidate liquidity rule (slings.rs build_candidatelist): pull candidates need
  to_us > max(amount + 10_000 sat, min(depleteuptopercent*capacity, depleteuptoamount)),
  defaults 0.2 and 2_000_000 sat; job target defaults to 0.5 (target_cap capped by reserve).
"""
import json
import math
import random
import threading
import time
from collections import Counter

from .state import NORMAL_STATES, SCID_RE, SimRpcError

SLING_ERR = -32700
VERSION = "v4.2.1"
DEFAULT_PCT, DEFAULT_AMT_MSAT = 0.2, 2_000_000_000
WINDOW_DAYS = 30
JOB_KEYS = ("scid", "direction", "amount", "maxppm", "outppm", "target", "maxhops",
            "candidates", "depleteuptopercent", "depleteuptoamount", "paralleljobs")
ONCE_KEYS = JOB_KEYS + ("onceamount",)
STOPPED_STATES = ("Stopped", "Stopping", "Error", "ChanNotNormal")


def fail(msg):
    return SimRpcError(SLING_ERR, msg, None)


def _uint(val, msg):
    if isinstance(val, bool) or not isinstance(val, int) or val < 0:
        raise fail(msg)
    return val


def _float(val, msg):
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise fail(msg)
    return float(val)


def _scid(val, what="scid"):
    if not isinstance(val, str):
        raise fail(f"invalid string for {what}")
    if not SCID_RE.match(val):
        raise fail(f"Malformed short_channel_id: {val}")
    return val


def _scid_key(scid):
    return tuple(int(p) for p in scid.split("x"))


def _json_flag(val):
    if not isinstance(val, bool):
        raise fail("invalid `json` flag, not a bool. Use `true` or `false`")
    return val


def _in_window(rows, key):
    """sling-stats only counts the last sling-stats-delete-*-age days (default 30)."""
    cutoff = time.time() - WINDOW_DAYS * 86400
    return [r for r in rows if r[key] >= cutoff]


def _most_common(values):
    common = Counter(values).most_common(1)
    return common[0][0] if common else None


def _when(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "Never"


class SimSling:
    def __init__(self, state):
        self.state = state
        self.jobs = {}              # scid -> Job in sling's serialized form
        self.tasks = {}             # scid -> list of task states, index = task number - 1
        self.successes, self.failures = {}, {}
        self.once = {}              # scid -> {"job", "onceamount_msat", "total_msat", "done"}
        self.effective_ppm = 300
        self.payments_per_step = 1  # > 1: each task pays that many times per step (a fast sling)
        self.unroutable = set()
        self.costs = None           # a RefillCosts: per-attempt costs and failures instead
        self.hops = 3
        self._interval = None
        self._stop = threading.Event()
        self._thread = None

    # ---- background stepping --------------------------------------------
    @property
    def step_interval(self):
        return self._interval

    @step_interval.setter
    def step_interval(self, seconds):
        """None = only manual step(); a number starts a thread stepping that often; 0 steps
        in a tight loop (a sling that pays as fast as it can)."""
        self._interval = seconds
        if seconds is not None and not (self._thread and self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sling-stepper", daemon=True)
            self._thread.start()

    def _run(self):
        while self._interval is not None and not self._stop.wait(self._interval or 0.0005):
            self.step()

    def close(self):
        self._interval = None
        self._stop.set()

    # ---- python-side helpers --------------------------------------------
    def add_job(self, scid, direction="pull", amount=100_000, maxppm=1000, **kw):
        """Same validation as the sling-job RPC; kw are its other keyword params."""
        with self.state.lock:
            return self.rpc_job(dict(kw, scid=scid, direction=direction, amount=amount,
                                     maxppm=maxppm))

    def state_of(self, scid):
        return list(self.tasks.get(scid, ["NotStarted"]))

    # ---- RPC methods (params are raw: list or dict, like a plugin gets them) ----
    def call(self, method, params):
        handler = {"sling-job": self.rpc_job, "sling-go": self.rpc_go, "sling-once": self.rpc_once,
                   "sling-stop": self.rpc_stop, "sling-deletejob": self.rpc_deletejob,
                   "sling-jobsettings": self.rpc_jobsettings, "sling-stats": self.rpc_stats,
                   "sling-version": lambda p: {"version": VERSION},
                   "sling-except-chan": self.rpc_except,
                   "sling-except-peer": self.rpc_except}.get(method)
        if handler is None:
            return None
        with self.state.lock:
            return handler(params)

    def rpc_job(self, params):
        if not isinstance(params, dict):
            raise fail(f"Expected an object! Got {json.dumps(params)} instead")
        for key in params:
            if key not in JOB_KEYS:
                raise fail(f"Invalid argument: {key}")
        job, scid = self._parse_job(params)
        self._normal_channel(scid)
        if self._once_running(scid):
            raise fail("Once-job is currently running for this channel")
        self._stop_tasks(scid)
        self.once.pop(scid, None)
        self.jobs[scid] = job
        return {"result": "success"}

    def rpc_once(self, params):
        if not isinstance(params, dict):
            raise fail(f"Expected an object! Got {json.dumps(params)} instead")
        for key in params:
            if key not in ONCE_KEYS:
                raise fail(f"Invalid argument: {key}")
        if "target" in params:
            raise fail("`target` can not be used with `sling-once`")
        job, scid = self._parse_job(params, once=True)
        ch = self._normal_channel(scid)
        spendable, receivable = self.state._spendable(ch)
        pull = job["sat_direction"] == "Pull"
        if (receivable if pull else spendable) < job["onceamount_msat"]:
            raise fail(f"Channel {scid} has not enough capacity to "
                       f"{'pull' if pull else 'push'} {job['onceamount_msat']}msat")
        if scid in self._live_jobs():
            raise fail("There is already a job for that scid!")
        if scid in self.tasks and scid not in self.once:
            raise fail("There is already a job for that scid! Please delete it first.")
        if self._once_running(scid):
            raise fail("There is already a job for that scid running!")
        onceamount = job.pop("onceamount_msat")
        self.once[scid] = {"job": job, "onceamount_msat": onceamount, "total_msat": 0,
                           "done": False}
        self.tasks[scid] = ["Starting"] * job.get("paralleljobs", 1)
        return {"result": "started"}

    def _once_running(self, scid):
        once = self.once.get(scid)
        return bool(once) and not once["done"] and any(
            st not in STOPPED_STATES for st in self.tasks.get(scid, []))

    def _parse_job(self, p, once=False):
        if "scid" not in p:
            raise fail("Missing scid")
        scid = _scid(p["scid"])
        if "direction" not in p:
            raise fail("Missing direction")
        direction = p["direction"]
        if not isinstance(direction, str):
            raise fail("invalid string for direction")
        if direction not in ("pull", "push"):
            raise fail(f"could not parse flow direction from `{direction}`")
        if "amount" not in p:
            raise fail("Missing amount")
        amount = _uint(p["amount"], "amount must be a positive integer") * 1000
        if amount == 0:
            raise fail("amount must be greater than 0")
        if "maxppm" not in p:
            raise fail("Missing maxppm")
        job = {"sat_direction": direction.capitalize(), "amount_msat": amount}
        if "outppm" in p:
            job["outppm"] = _uint(p["outppm"], "outppm must be an integer")
        job["maxppm"] = _uint(p["maxppm"], "maxppm must be an integer")
        if once:
            if "onceamount" not in p:
                raise fail("Missing onceamount")
            total = _uint(p["onceamount"], "onceamount must be a positive integer") * 1000
            if total == 0:
                raise fail("onceamount must be greater than 0")
            if total % amount:
                raise fail(f"onceamount must be a multiple of amount. onceamount: "
                           f"{total // 1000}, amount: {amount // 1000}")
            job["onceamount_msat"] = total
        cands = self._parse_candidates(p.get("candidates"), direction)
        if cands is not None:
            job["candidates"] = cands
        if "target" in p:
            job["target"] = _float(p["target"], "target must be a floating point")
        if "maxhops" in p:
            job["maxhops"] = _uint(p["maxhops"], "maxhops must be an integer")
            if job["maxhops"] < 2:
                raise fail("maxhops must be atleast 2")
        if "depleteuptopercent" in p:
            pct = _float(p["depleteuptopercent"], "depleteuptopercent must be a floating point")
            if not 0.0 <= pct < 1.0:
                raise fail("depleteuptopercent must be between 0.0 and <1.0")
            job["depleteuptopercent"] = pct
        if "depleteuptoamount" in p:
            job["depleteuptoamount_msat"] = _uint(p["depleteuptoamount"],
                                                  "depleteuptoamount must be an integer") * 1000
        if "paralleljobs" in p:
            job["paralleljobs"] = _uint(p["paralleljobs"], "paralleljobs must be an integer")
            if job["paralleljobs"] < 1:
                raise fail("paralleljobs must be atleast 1")
        if "outppm" not in job and cands is None:
            raise fail("Atleast one of outppm and candidatelist must be set.")
        return job, scid

    def _parse_candidates(self, raw, direction):
        if raw is None:
            return None
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise fail("Invalid array for candidate list") from None
        if not isinstance(raw, list):
            raise fail("Invalid array for candidate list")
        cands = [_scid(c, "channel id in candidate list") for c in raw]
        for cand in cands:
            other = self.jobs.get(cand)
            if other and other["sat_direction"].lower() == direction:
                raise fail(f"candidate {cand} has a {direction}-job that rebalances in the "
                           "other direction!")
        return cands

    def _normal_channel(self, scid):
        ch = self.state.channels.get(scid)
        if ch is None:
            raise fail("Channel not found")
        if ch["state"] not in NORMAL_STATES:
            raise fail("Not in CHANNELD_NORMAL or CHANNELD_AWAITING_SPLICE state!")
        return ch

    def _live_jobs(self):
        """read_jobs(): jobs whose channel is not normal any more are not listed."""
        return {s: j for s, j in sorted(self.jobs.items(), key=lambda kv: _scid_key(kv[0]))
                if self.state.channels.get(s, {}).get("state") in NORMAL_STATES}

    @staticmethod
    def _one_scid(params, empty_ok=True):
        if isinstance(params, list):
            if len(params) > 1:
                raise fail("Please provide exactly one ShortChannelId or nothing")
            return _scid(params[0]) if params and params[0] is not None else None
        if isinstance(params, dict):
            return _scid(params["scid"]) if params.get("scid") is not None else None
        raise fail(f"invalid arguments, expected array or object with `scid`, got: {params}")

    def rpc_go(self, params):
        jobs = self._live_jobs()
        if not jobs:
            raise fail("No jobs found")
        scid = self._one_scid(params)
        if scid is not None:
            jobs = {s: j for s, j in jobs.items() if s == scid}
            if not jobs:
                raise fail("Shortchannelid not found in jobs")
        started = failed = 0
        for s, job in jobs.items():
            if self._once_running(s):
                failed += job.get("paralleljobs", 1)
                continue
            self.once.pop(s, None)
            tasks = self.tasks.setdefault(s, [])
            for i in range(job.get("paralleljobs", 1)):
                if i >= len(tasks):
                    tasks.append("Starting")
                    started += 1
                elif tasks[i] in ("Stopped", "Error", "ChanNotNormal", "NotStarted"):
                    tasks[i] = "Starting"
                    started += 1
        return {"tasks_started": started, "tasks_failed_start:": failed}

    def _stop_tasks(self, scid=None):
        count = 0
        for s, tasks in self.tasks.items():
            if scid is None or s == scid:
                count += len(tasks)
                tasks[:] = ["Stopped"] * len(tasks)
        return count

    def rpc_stop(self, params):
        return {"stopped_count": self._stop_tasks(self._one_scid(params))}

    def rpc_deletejob(self, params):
        if isinstance(params, list):
            if not params or len(params) > 2:
                raise fail("Invalid amount of arguments: Please provide exactly one "
                           "ShortChannelId or `all` and optionally if you want to delete "
                           "the stats")
            job, delete_stats = params[0], params[1] if len(params) > 1 else False
        elif isinstance(params, dict):
            job, delete_stats = params.get("job"), params.get("delete_stats", False)
        else:
            raise fail(f"sling-deletejob: invalid arguments, expected array or object with "
                       f"`job`, got {params}")
        if not isinstance(job, str):
            raise fail("invalid string for deleting job(s)")
        if isinstance(delete_stats, str):
            delete_stats = delete_stats == "true"
        scids = list(set(self.jobs) | set(self.tasks)) if job == "all" else [_scid(job)]
        for s in scids:
            self._stop_tasks(s)
            self.jobs.pop(s, None)
            self.tasks.pop(s, None)
            self.once.pop(s, None)
            if delete_stats:
                self.successes.pop(s, None)
                self.failures.pop(s, None)
        return {"result": "success"}

    def rpc_jobsettings(self, params):
        if isinstance(params, dict) and len(params) > 1 or \
                isinstance(params, list) and len(params) > 1:
            raise fail("Please provide exactly one ShortChannelId or nothing for all")
        jobs = self._live_jobs()
        scid = self._one_scid(params)
        if scid is None:
            return {s: dict(j) for s, j in jobs.items()}
        if scid not in jobs:
            raise fail("channel not found")
        return {scid: dict(jobs[scid])}

    def rpc_except(self, params):
        if isinstance(params, list) and params[:1] == ["list"] or \
                isinstance(params, dict) and params.get("command") == "list":
            return []
        raise fail("Use `add`/`remove` and a ShortChannelId or just `list`")

    # ---- sling-stats ----------------------------------------------------
    @staticmethod
    def _stats_args(params):
        if isinstance(params, list):
            if len(params) > 2:
                raise fail("Too many arguments, please only provide `scid` and/or `json`")
            if not params:
                return None, False
            if isinstance(params[0], bool):
                return None, params[0]
            flag = params[1] if len(params) > 1 else False
        elif isinstance(params, dict):
            if params.get("scid") is None:
                return None, _json_flag(params.get("json", False))
            params, flag = [params["scid"]], params.get("json", False)
        else:
            raise fail(f"sling-stats: invalid arguments, expected array or object, got: {params}")
        if not isinstance(params[0], str):
            raise fail("invalid short_channel_id")
        return _scid(params[0]), _json_flag(flag)

    def rpc_stats(self, params):
        scid, as_json = self._stats_args(params)
        if scid is not None:
            res = {"successes_in_time_window": self._success_stats(self.successes.get(scid, [])),
                   "failures_in_time_window": self._failure_stats(self.failures.get(scid, []))}
            if as_json:
                return res
            text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in res.items())
            return {"format-hint": "simple", "result": text}
        scids = list(self._live_jobs()) + [
            s for s in self.once if s not in self.jobs
            and self.state.channels.get(s, {}).get("state") in NORMAL_STATES]
        rows = [self._summary(s) for s in scids]
        rows.sort(key=lambda r: r["alias"].lower())
        if as_json:
            return rows
        lines = [" ".join(str(r[k]) for k in ("alias", "scid", "rebamount", "w_feeppm"))
                 + " " + ",".join(r["status"]) for r in rows]
        return {"format-hint": "simple", "result": "\n".join(lines)}

    def _alias(self, scid):
        return "ALIAS_NOT_FOUND" if scid in self.state.channels else "PEER_NOT_FOUND"

    def _summary(self, scid):
        tasks = self.tasks.get(scid) or ["NotStarted"]
        succ = _in_window(self.successes.get(scid, []), "completed_at")
        total = sum(r["amount_msat"] for r in succ)
        wppm = sum(r["fee_ppm"] * r["amount_msat"] for r in succ) // total if total else 0
        last_s = max((r["completed_at"] for r in self.successes.get(scid, [])), default=0)
        last_f = max((r["created_at"] for r in self.failures.get(scid, [])), default=0)
        return {"alias": "ALIAS_NOT_FOUND", "scid": scid,
                "pubkey": self.state.channels[scid]["peer_id"],
                "status": [f"{i + 1}:{st}" for i, st in enumerate(tasks)],
                "rebamount": f"{total // 1000:,}", "w_feeppm": wppm,
                "last_route_taken": _when(max(last_s, last_f)), "last_success_reb": _when(last_s)}

    def _partners(self, rows):
        sats = Counter()
        for r in rows:
            sats[r["channel_partner"]] += r["amount_msat"] // 1000
        top = sats.most_common(5)
        return [{"scid": s, "alias": self._alias(s), "sats": n} for s, n in top]

    def _success_stats(self, rows):
        rows = _in_window(rows, "completed_at")
        if not rows:
            return None
        total = sum(r["amount_msat"] for r in rows)
        wppm = sum(r["fee_ppm"] * r["amount_msat"] for r in rows) // total
        ppms = sorted(r["fee_ppm"] for r in rows)
        last = max(rows, key=lambda r: r["completed_at"])
        return {"time_window_days": str(WINDOW_DAYS), "total_amount_sats": total // 1000,
                "feeppm_weighted_avg": wppm, "feeppm_min": ppms[0], "feeppm_max": ppms[-1],
                "feeppm_median": ppms[len(ppms) // 2],
                "feeppm_90th_percentile": ppms[max(0, math.ceil(len(ppms) * 0.9) - 1)],
                "top_5_channel_partners": self._partners(rows),
                "most_common_hop_count": _most_common(r["hops"] for r in rows),
                "time_of_last_rebalance": _when(last["completed_at"]),
                "last_channel_partner": last["channel_partner"], "total_rebalances": len(rows),
                "total_spent_sats": int(wppm * 0.000_001 * total) // 1000}

    def _failure_stats(self, rows):
        rows = _in_window(rows, "created_at")
        if not rows:
            return None
        top_r = Counter(r["failure_reason"] for r in rows).most_common(5)
        top_n = Counter(r["failure_node"] for r in rows).most_common(5)
        return {"time_window_days": str(WINDOW_DAYS),
                "total_amount_tried_sats": sum(r["amount_msat"] for r in rows) // 1000,
                "top_5_failure_reasons": [{"failure_reason": k, "failure_count": v}
                                          for k, v in top_r],
                "top_5_fail_nodes": [{"peer_id": k, "alias": "ALIAS_NOT_FOUND", "count": v}
                                     for k, v in top_n],
                "top_5_channel_partners": self._partners(rows),
                "most_common_hop_count": _most_common(r["hops"] for r in rows),
                "time_of_last_attempt": _when(max(r["created_at"] for r in rows)),
                "total_rebalances_tried": len(rows)}

    # ---- liquidity movement ---------------------------------------------
    def step(self, now=None):
        """Rebalance attempts of every running task (`payments_per_step` each, one by
        default); returns what happened (list of dicts)."""
        now = time.time() if now is None else now
        done = []
        with self.state.lock:
            for scid, tasks in self.tasks.items():
                once = self.once.get(scid)
                job = once["job"] if once else self.jobs.get(scid)
                for i in range(len(tasks)):
                    for _ in range(self.payments_per_step):
                        if job is None or tasks[i] in STOPPED_STATES or once and once["done"]:
                            break
                        if once and once["total_msat"] + job["amount_msat"] > once["onceamount_msat"]:
                            tasks[i], once["done"] = "Balanced", True   # sling-once: done
                            break
                        tasks[i], result = self._attempt(scid, job, now, once is not None)
                        if not result:
                            break
                        done.append(result)
                        if once and result["ok"]:
                            once["total_msat"] += job["amount_msat"]
        return done

    def _attempt(self, scid, job, now, once=False):
        ch = self.state.channels.get(scid)
        if ch is None or ch["state"] not in NORMAL_STATES:
            return "ChanNotNormal", None
        pull = job["sat_direction"] == "Pull"
        amount = job["amount_msat"]
        if self._balanced(ch, job, pull, once):
            return "Balanced", None
        if not ch["connected"]:
            return "Disconnected", None
        cands = self._candidates(scid, job, pull)
        if not cands:
            return "NoCandidates", None
        ppm, routed = (self.effective_ppm, scid not in self.unroutable) if self.costs is None \
            else self.costs.draw(scid)
        if ppm > job["maxppm"]:
            return "NoCheapRoute", None
        partner = cands[0]
        fee = amount * ppm // 1_000_000
        if not routed:
            self.failures.setdefault(scid, []).append({
                "amount_msat": amount, "failure_reason": "WIRE_TEMPORARY_CHANNEL_FAILURE",
                "failure_node": ch["peer_id"], "channel_partner": partner["scid"],
                "hops": self.hops, "created_at": int(now)})
            return "Rebalancing", {"scid": scid, "partner": partner["scid"], "ok": False,
                                   "amount_msat": amount, "fee_msat": 0}
        src, dst = (partner, ch) if pull else (ch, partner)
        src["local_msat"] -= amount + fee
        dst["local_msat"] += amount
        self.successes.setdefault(scid, []).append({
            "amount_msat": amount, "fee_ppm": ppm,
            "channel_partner": partner["scid"], "hops": self.hops, "completed_at": int(now)})
        return "Rebalancing", {"scid": scid, "partner": partner["scid"], "ok": True,
                               "amount_msat": amount, "fee_msat": fee}

    @staticmethod
    def _balanced(ch, job, pull, once=False):
        """Job.is_balanced() plus health_check's 'cannot move one more amount' rule
        (a once-job's target is the whole capacity)."""
        total = ch["capacity_msat"]
        cap = total if once else int(total * job.get("target", 0.5))
        reserve = ch["their_reserve_msat"] if pull else ch["our_reserve_msat"]
        if not once and cap >= total - reserve - 1000:
            cap = total - reserve - 2000
        local = ch["local_msat"]
        if pull:
            return local >= cap or total - local - reserve < job["amount_msat"]
        return total - local >= cap or local - ch["our_reserve_msat"] < job["amount_msat"]

    def _candidates(self, scid, job, pull):
        amount = job["amount_msat"]
        pct = job.get("depleteuptopercent", DEFAULT_PCT)
        floor_amt = job.get("depleteuptoamount_msat", DEFAULT_AMT_MSAT)
        wanted = job.get("candidates")
        out = []
        for ch in self.state.channels.values():
            s = ch["scid"]
            if s == scid or (wanted is not None and s not in wanted):
                continue
            other = self.jobs.get(s)
            if other and other["sat_direction"] == job["sat_direction"]:
                continue
            if self._once_running(s) and self.once[s]["job"]["sat_direction"] == job["sat_direction"]:
                continue   # sling excludes a running once-job's channel from its direction
            if ch["state"] not in NORMAL_STATES or not ch["connected"]:
                continue
            target = max(amount + 10_000_000, min(int(pct * ch["capacity_msat"]), floor_amt))
            liquid = ch["local_msat"] if pull else ch["capacity_msat"] - ch["local_msat"]
            if liquid <= target:
                continue
            ppm = ch["fee_ppm"] + ch["fee_base_msat"] * 1_000_000 // amount
            if "outppm" in job and (ppm > job["outppm"] if pull else ppm < job["outppm"]):
                continue
            out.append(ch)
        out.sort(key=lambda c: -(c["local_msat"] if pull else c["capacity_msat"] - c["local_msat"]))
        return out


class RefillCosts:
    """What a rebalance into each channel costs, attempt by attempt (set SimSling.costs).

    Each destination has a median cost in ppm (unknown ones: default_ppm); one attempt's
    cheapest route costs that median times log-normal noise (sigma). An attempt above the
    job's maxppm finds no cheap route (task state NoCheapRoute, nothing recorded, as sling);
    one within it fails with probability fail_share (a payment that failed on the way,
    recorded in the failure stats), else it pays.
    """

    def __init__(self, median_ppm, sigma=0.3, fail_share=0.1, seed=1, default_ppm=300):
        self.median_ppm = dict(median_ppm)
        self.sigma = sigma
        self.fail_share = fail_share
        self.default_ppm = default_ppm
        self.rng = random.Random(f"refill-{seed}")

    def draw(self, scid):
        """(ppm of the cheapest route now, whether the payment gets through)."""
        median = self.median_ppm.get(scid, self.default_ppm)
        ppm = max(0, int(round(median * self.rng.lognormvariate(0.0, self.sigma))))
        return ppm, self.rng.random() >= self.fail_share
