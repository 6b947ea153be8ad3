"""Forwards store of the simulated node.

Like lightningd, the simulator keeps forwards in an SQLite table of its own (in memory
by default) whose rowid is `created_index`; `updated_index` is 0 until a forward is
resolved (settled/failed), then takes the next value of the global "updated" counter.
listforwards runs the same three queries as CLN v26.06 wallet.c forwarding_first():
  * with in_channel/out_channel: filters only, index/start/limit ignored, rowid order;
  * index=updated: `updated_index >= start ORDER BY updated_index LIMIT n`
    (unresolved rows have 0, so they come first when start is 0 - as in the sample);
  * otherwise: `rowid >= start ORDER BY rowid LIMIT n`.
The `wait forwards created|updated` index counters live here too.
"""
import hashlib
import math
import random
import sqlite3
import threading
import time

STATUS_CODES = {"offered": 0, "settled": 1, "failed": 2, "local_failed": 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
FAILREASONS = {4103: "WIRE_TEMPORARY_CHANNEL_FAILURE", 4107: "WIRE_AMOUNT_BELOW_MINIMUM",
               4108: "WIRE_FEE_INSUFFICIENT", 4109: "WIRE_INCORRECT_CLTV_EXPIRY",
               4110: "WIRE_EXPIRY_TOO_SOON", 4116: "WIRE_CHANNEL_DISABLED",
               8194: "WIRE_TEMPORARY_NODE_FAILURE", 16394: "WIRE_UNKNOWN_NEXT_PEER"}
COLS = ("created_index, updated_index, in_channel, in_htlc_id, out_channel, out_htlc_id, "
        "in_msat, out_msat, status, failcode, style, received_time, resolved_time")
SCHEMA = """
CREATE TABLE forwards (
  created_index INTEGER PRIMARY KEY, updated_index INTEGER NOT NULL DEFAULT 0,
  in_channel TEXT NOT NULL, in_htlc_id INTEGER NOT NULL, out_channel TEXT,
  out_htlc_id INTEGER, in_msat INTEGER NOT NULL, out_msat INTEGER,
  status INTEGER NOT NULL, failcode INTEGER, style TEXT,
  received_time REAL NOT NULL, resolved_time REAL);
CREATE INDEX forwards_updated ON forwards(updated_index);
CREATE INDEX forwards_in ON forwards(in_channel);
CREATE INDEX forwards_out ON forwards(out_channel);
"""
CHUNK = 100_000


def render(row, old=False):
    """A listforwards entry exactly as json_add_forwarding_fields() writes it."""
    ci, ui, inc, inh, outc, outh, inm, outm, st, fc, style, rt, rst = row
    fwd = {}
    if not old:  # pre-23.11 nodes had no indexes
        fwd["created_index"] = ci
        if ui:
            fwd["updated_index"] = ui
    fwd["in_channel"] = inc
    fwd["in_htlc_id"] = inh
    if outc:
        fwd["out_channel"] = outc
        if outh is not None:
            fwd["out_htlc_id"] = outh
    fwd["in_msat"] = inm
    if outm:
        fwd["out_msat"] = outm
        fwd["fee_msat"] = inm - outm
    fwd["status"] = STATUS_NAMES[st]
    if fc:
        fwd["failcode"] = fc
        fwd["failreason"] = FAILREASONS.get(fc, f"WIRE_UNKNOWN_{fc}")
    if style:
        fwd["style"] = style
    fwd["received_time"] = rt
    if rst is not None:
        fwd["resolved_time"] = rst
    return fwd


def preimage_of(in_channel, in_htlc_id):
    """Deterministic preimage/payment_hash pair (CLN's forwards table keeps neither)."""
    pre = hashlib.sha256(f"preimage-{in_channel}-{in_htlc_id}".encode()).digest()
    return pre.hex(), hashlib.sha256(pre).hexdigest()


class ForwardStore:
    def __init__(self, path=":memory:"):
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA journal_mode=MEMORY")
        self.db.executescript(SCHEMA)
        self.indexes = {"created": 0, "updated": 0, "deleted": 0}
        self.fees_collected_msat = 0
        self._next_in, self._next_out = {}, {}
        self._waiters = []

    def close(self):
        with self.lock:
            for w in self._waiters:
                w["event"].set()
            self.db.close()

    # ---- writes ---------------------------------------------------------
    @staticmethod
    def _next(counters, scid):
        val = counters.get(scid, 0)
        counters[scid] = val + 1
        return val

    def add(self, in_channel, out_channel, out_msat, fee_msat, status="settled",
            received_time=None, resolved_time=None, failcode=None, style="tlv"):
        if status not in STATUS_CODES:
            raise ValueError(f"unknown status {status}")
        rt = time.time() if received_time is None else float(received_time)
        with self.lock:
            in_htlc = self._next(self._next_in, in_channel)
            local_fail = status == "local_failed"
            out_htlc = None if local_fail or not out_channel else self._next(self._next_out,
                                                                             out_channel)
            if local_fail:
                failcode = failcode or 4103
            ci = self.indexes["created"] + 1
            self.db.execute(f"INSERT INTO forwards ({COLS}) VALUES (?,0,?,?,?,?,?,?,?,?,?,?,NULL)",
                            (ci, in_channel, in_htlc, out_channel, out_htlc,
                             out_msat + fee_msat, None if local_fail else out_msat,
                             STATUS_CODES["local_failed" if local_fail else "offered"],
                             failcode, style, rt))
            self._bump("created", 1, lambda: self._details(ci))
            if status in ("settled", "failed"):
                self._resolve(ci, status, rt + 0.1 if resolved_time is None else resolved_time)
            return ci

    def _resolve(self, ci, status, resolved_time):
        ui = self.indexes["updated"] + 1
        self.db.execute("UPDATE forwards SET status=?, updated_index=?, resolved_time=? "
                        "WHERE created_index=?", (STATUS_CODES[status], ui, resolved_time, ci))
        if status == "settled":
            inm, outm = self.db.execute("SELECT in_msat, out_msat FROM forwards WHERE "
                                        "created_index=?", (ci,)).fetchone()
            self.fees_collected_msat += inm - outm
        self._bump("updated", 1, lambda: self._details(ci))
        return ui

    def resolve(self, ci, status="settled", resolved_time=None):
        """offered -> settled|failed; returns the new updated_index."""
        with self.lock:
            row = self.row(ci)
            if row is None or row[8] != STATUS_CODES["offered"]:
                raise ValueError(f"forward {ci} is not offered")
            return self._resolve(ci, status, time.time() if resolved_time is None
                                 else resolved_time)

    # ---- reads ----------------------------------------------------------
    def row(self, ci):
        with self.lock:
            return self.db.execute(f"SELECT {COLS} FROM forwards WHERE created_index=?",
                                   (ci,)).fetchone()

    def forward(self, ci):
        row = self.row(ci)
        if row is None:
            raise KeyError(f"no forward {ci}")
        return render(row)

    def count(self):
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM forwards").fetchone()[0]

    def listforwards(self, status=None, in_channel=None, out_channel=None, index=None,
                     start=0, limit=None, old=False):
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(STATUS_CODES[status])
        if in_channel or out_channel:
            for col, val in (("in_channel", in_channel), ("out_channel", out_channel)):
                if val:
                    where.append(f"{col} = ?")
                    args.append(val)
            order, tail = "created_index", ""
        else:
            col = "updated_index" if index == "updated" else "created_index"
            where.append(f"{col} >= ?")
            args.append(start or 0)
            order = f"{col}, created_index"
            tail = " LIMIT ?"
            args.append(-1 if limit is None else limit)
        sql = (f"SELECT {COLS} FROM forwards" + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {order}{tail}")
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
        return [render(r, old) for r in rows]

    def _details(self, ci):
        """What CLN passes to wait_index_increment (the `forwards` object of a wait answer)."""
        row = self.row(ci)
        det = {"status": STATUS_NAMES[row[8]], "in_channel": row[2], "in_htlc_id": row[3],
               "in_msat": row[6]}
        if row[4]:
            det["out_channel"] = row[4]
        return det

    def events(self, ci, history=False):
        """forward_event payloads for this forward's current status (all of them if history)."""
        row = self.row(ci)
        if row is None:
            raise KeyError(f"no forward {ci}")
        ci, ui, inc, inh, outc, _outh, inm, outm, st, fc, style, rt, rst = row
        preimage, phash = preimage_of(inc, inh)
        status = STATUS_NAMES[st]

        def event(first, status):
            ev = dict(first)
            ev.update({"payment_hash": phash, "in_channel": inc, "in_htlc_id": inh})
            if outc:
                ev["out_channel"] = outc
            ev["in_msat"] = inm
            if outm:
                ev.update({"out_msat": outm, "fee_msat": inm - outm})
            ev["status"] = status
            if fc:
                ev.update({"failcode": fc, "failreason": FAILREASONS.get(fc, f"WIRE_UNKNOWN_{fc}")})
            if style:
                ev["style"] = style
            ev["received_time"] = rt
            return ev

        if status in ("offered", "local_failed"):
            return [event({"created_index": ci}, status)]
        final = event({"updated_index": ui}, status)
        final["resolved_time"] = rst
        if status == "settled":
            final["preimage"] = preimage
        return ([event({"created_index": ci}, "offered")] if history else []) + [final]

    # ---- wait -----------------------------------------------------------
    def _bump(self, index, n, details=None):
        """details: a callable giving the forward's wait details, read only if someone waits."""
        self.indexes[index] += n
        val = self.indexes[index]
        for w in self._waiters:
            if w["index"] == index and w["result"] is None and val >= w["next"]:
                res = {"subsystem": "forwards", index: val}
                if details:
                    res["forwards"] = details()
                w["result"] = res
                w["event"].set()

    def wait(self, index, nextvalue, timeout):
        """Answer when the index reaches nextvalue.  lightningd would block forever; after
        `timeout` seconds we answer with the current value so no thread waits forever."""
        with self.lock:
            val = self.indexes[index]
            if val >= nextvalue:
                return {"subsystem": "forwards", index: val}
            waiter = {"index": index, "next": nextvalue, "result": None,
                      "event": threading.Event()}
            self._waiters.append(waiter)
        waiter["event"].wait(timeout)
        with self.lock:
            self._waiters.remove(waiter)
            return waiter["result"] or {"subsystem": "forwards", index: self.indexes[index]}

    # ---- history --------------------------------------------------------
    def generate_history(self, n, policies, start_time, end_time, seed=1, settled_share=0.9):
        """Bulk-insert n forwards among the channels in `policies` (scid -> (ppm, base)).

        Channel volumes are Pareto-skewed (a few channels carry most flow), amounts
        log-uniform in 1k..5M sat, fee = base + amount*ppm of the out channel, times
        evenly spread and increasing; non-settled rows are failed or local_failed."""
        scids = list(policies)
        if len(scids) < 2:
            raise ValueError("generate_history needs at least two channels")
        rng = random.Random(seed)
        cum, total = [], 0.0
        for _ in scids:
            total += rng.paretovariate(1.2)
            cum.append(total)
        pos = {s: i for i, s in enumerate(scids)}
        step = (end_time - start_time) / max(n, 1)
        lo, hi = math.log(1_000), math.log(5_000_000)
        failed_cut = settled_share + (1 - settled_share) * 0.6
        with self.lock:
            self.db.execute("BEGIN")
            done = 0
            while done < n:
                k = min(CHUNK, n - done)
                rows, fees, resolved = self._history_chunk(
                    rng, scids, pos, cum, k, done, start_time, step, lo, hi,
                    policies, settled_share, failed_cut)
                self.db.executemany(f"INSERT INTO forwards ({COLS}) VALUES "
                                    "(?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                self.fees_collected_msat += fees
                self._bump("created", k)
                if resolved:
                    self._bump("updated", resolved)
                done += k
            self.db.execute("COMMIT")

    def _history_chunk(self, rng, scids, pos, cum, k, offset, start_time, step, lo, hi,
                       policies, settled_share, failed_cut):
        ins = rng.choices(scids, cum_weights=cum, k=k)
        outs = rng.choices(scids, cum_weights=cum, k=k)
        rows, fees, resolved = [], 0, 0
        ci, ui = self.indexes["created"], self.indexes["updated"]
        next_in, next_out, nsc = self._next_in, self._next_out, len(scids)
        for i in range(k):
            inc, outc = ins[i], outs[i]
            if inc == outc:
                outc = scids[(pos[inc] + 1) % nsc]
            ci += 1
            rt = start_time + (offset + i + rng.random()) * step
            out_msat = int(math.exp(rng.uniform(lo, hi)) * 1000)
            ppm, base = policies[outc]
            in_msat = out_msat + base + out_msat * ppm // 1_000_000
            inh = next_in.get(inc, 0)
            next_in[inc] = inh + 1
            r = rng.random()
            if r < failed_cut:
                outh = next_out.get(outc, 0)
                next_out[outc] = outh + 1
                ui += 1
                resolved += 1
                st = 1 if r < settled_share else 2
                if st == 1:
                    fees += in_msat - out_msat
                rows.append((ci, ui, inc, inh, outc, outh, in_msat, out_msat, st, None, "tlv",
                             rt, rt + 0.05 + rng.random() * 3))
            else:
                code = 4103 if r < failed_cut + (1 - failed_cut) * 0.7 else 4108
                rows.append((ci, 0, inc, inh, outc, None, in_msat, None, 3, code, "tlv", rt, None))
        return rows, fees, resolved
