"""SQLite storage: the only module that holds SQL.

WAL mode, one connection per thread, a busy timeout, and ordered migrations tracked in
PRAGMA user_version that run at start-up before any thread starts (index creation
locks writers). Forwards are keyed by Core Lightning's own (in_channel, in_htlc_id),
so a forward seen live and again in a listforwards page is stored once; where the two
differ, the page (the node's own record) wins.

Flow is also rolled up per channel and hour (flow_hourly) at insert time, so the
per-cycle aggregation reads a few thousand rollup rows instead of millions of forwards.

The file (db_file.py): opened only after read-only checks say it is ours and not newer
than this code; created 0600 in a directory made 0700. A connection that hit a storage
fault (read-only, disk full, I/O error) is replaced on its thread's next use, so the loops
store again once the storage is back, without a restart. Connections open with mode=rw:
SQLite never creates the file after start-up.

If the file is deleted or replaced while the plugin runs, every use of it (reads too)
raises DatabaseGone, said once in the log and in revenue-status, until the plugin is
restarted; its -wal is first checkpointed into the old file and emptied (see _abandon).
It does not re-adopt the new file: in memory it holds what the old file said (fee states,
running jobs, the day's budget reservations), and running on a file that says otherwise
(an empty one, or an older copy) would decide from a history it does not have and could
spend a budget already spent. A restart runs the checks on whatever the path then names.
"""
import bisect
import contextlib
import json
import os
import re
import sqlite3
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from modules.db_file import (APPLICATION_ID, DatabaseGone, DatabaseRefused, FileIdentity,
                             StorageFaults, StoreConnection, create_private_file, file_uri,
                             inspect, make_private_dirs, narrow_modes)
from modules.models import (LOCAL_FAILED, TEMPORARY_CHANNEL_FAILURE, ChannelFlow, FlowTotals,
                            Forward, RebalanceSpend)

BUSY_TIMEOUT_MS = 10000
HOUR_SECONDS = 3600
DAY_SECONDS = 86400
# The daily budget's window: fees reconciled more than this long ago no longer count.
BUDGET_WINDOW_SECONDS = DAY_SECONDS

# Each entry runs once, in order; user_version records how many have run.
MIGRATIONS: Tuple[Tuple[str, ...], ...] = (
    (  # 1: forwards, their indexes, hourly rollups, marks
        """CREATE TABLE forwards (
               in_channel TEXT NOT NULL,
               in_htlc_id INTEGER NOT NULL,
               out_channel TEXT,
               in_msat INTEGER NOT NULL,
               out_msat INTEGER NOT NULL,
               fee_msat INTEGER NOT NULL,
               received_time REAL NOT NULL,
               timestamp INTEGER NOT NULL,          -- resolved (settled) time, unix seconds
               created_index INTEGER,
               updated_index INTEGER,
               UNIQUE (in_channel, in_htlc_id))""",
        # Both sides indexed: SQLite's OR optimisation needs an index on each side.
        "CREATE INDEX idx_forwards_out_time ON forwards(out_channel, timestamp)",
        "CREATE INDEX idx_forwards_in_time ON forwards(in_channel, timestamp)",
        """CREATE TABLE flow_hourly (
               hour INTEGER NOT NULL,               -- timestamp / 3600
               channel TEXT NOT NULL,
               in_msat INTEGER NOT NULL DEFAULT 0,
               out_msat INTEGER NOT NULL DEFAULT 0,
               fee_msat INTEGER NOT NULL DEFAULT 0, -- earned as the outgoing channel
               in_count INTEGER NOT NULL DEFAULT 0,
               out_count INTEGER NOT NULL DEFAULT 0,
               PRIMARY KEY (hour, channel)) WITHOUT ROWID""",
        "CREATE TABLE marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ),
    (  # 2: flow results, fee controller state and its decisions, CLBOSS hand-offs
        """CREATE TABLE flow_results (
               scid TEXT PRIMARY KEY,
               in_msat INTEGER NOT NULL, out_msat INTEGER NOT NULL,
               fees_earned_msat INTEGER NOT NULL,
               in_count INTEGER NOT NULL, out_count INTEGER NOT NULL,
               flow_ratio REAL NOT NULL,
               daily_volume_msat INTEGER NOT NULL, daily_out_msat INTEGER NOT NULL,
               state TEXT NOT NULL, updated_at REAL NOT NULL)""",
        "CREATE TABLE fee_state (scid TEXT PRIMARY KEY, state_json TEXT NOT NULL, updated_at REAL NOT NULL)",
        """CREATE TABLE fee_decisions (
               id INTEGER PRIMARY KEY,
               scid TEXT NOT NULL, time REAL NOT NULL, action TEXT NOT NULL,
               old_fee_ppm INTEGER NOT NULL, new_fee_ppm INTEGER NOT NULL,
               applied INTEGER NOT NULL, detail_json TEXT NOT NULL)""",
        "CREATE INDEX idx_fee_decisions_scid_time ON fee_decisions(scid, time)",
        "CREATE TABLE clboss_unmanaged (peer_id TEXT PRIMARY KEY, time REAL NOT NULL)",
    ),
    (  # 3: rebalancing: failures, jobs, the budget ledger, decisions
        """CREATE TABLE channel_failures (
               scid TEXT NOT NULL, role TEXT NOT NULL,   -- 'destination' or 'source'
               failure_count INTEGER NOT NULL, last_failure_time REAL NOT NULL,
               PRIMARY KEY (scid, role))""",
        """CREATE TABLE rebalance_jobs (
               id INTEGER PRIMARY KEY,
               scid TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
               status TEXT NOT NULL,                      -- running, or how it ended
               amount_msat INTEGER NOT NULL,              -- what it set out to move
               chunk_sats INTEGER NOT NULL, max_ppm INTEGER NOT NULL,
               candidates_json TEXT NOT NULL, target REAL NOT NULL,
               moved_msat INTEGER NOT NULL DEFAULT 0, fee_paid_msat INTEGER NOT NULL DEFAULT 0,
               failures INTEGER NOT NULL DEFAULT 0,
               -- sling's stats are per channel, not per job: what they said when we started
               baseline_json TEXT NOT NULL DEFAULT '{}',
               manual INTEGER NOT NULL DEFAULT 0, end_reason TEXT)""",
        "CREATE INDEX idx_rebalance_jobs_status ON rebalance_jobs(status)",
        "CREATE INDEX idx_rebalance_jobs_scid ON rebalance_jobs(scid, started_at)",
        """CREATE TABLE budget_ledger (
               job_id INTEGER PRIMARY KEY,
               reserved_msat INTEGER NOT NULL,            -- worst case, held while running
               spent_msat INTEGER,                        -- actual, once reconciled
               reserved_at REAL NOT NULL, reconciled_at REAL)""",
        "CREATE INDEX idx_budget_ledger_reconciled ON budget_ledger(reconciled_at)",
        """CREATE TABLE rebalance_decisions (
               id INTEGER PRIMARY KEY, time REAL NOT NULL, scid TEXT NOT NULL,
               action TEXT NOT NULL, detail_json TEXT NOT NULL)""",
        "CREATE INDEX idx_rebalance_decisions_time ON rebalance_decisions(time)",
    ),
    (  # 4: unmet demand (local_failed forwards) and the fee each channel had over time
        """CREATE TABLE failed_forwards (
               in_channel TEXT NOT NULL,
               in_htlc_id INTEGER NOT NULL,
               out_channel TEXT,
               in_msat INTEGER NOT NULL,
               failcode INTEGER,
               received_time REAL NOT NULL,
               created_index INTEGER,
               UNIQUE (in_channel, in_htlc_id))""",
        "CREATE INDEX idx_failed_forwards_out_time ON failed_forwards(out_channel, received_time)",
        # refused here for lack of outbound balance (failcode 4103): demand the channel lost
        "ALTER TABLE flow_hourly ADD COLUMN unmet_count INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE flow_hourly ADD COLUMN unmet_msat INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE flow_results ADD COLUMN unmet_count INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE flow_results ADD COLUMN unmet_msat INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE fee_history (
               scid TEXT NOT NULL, time REAL NOT NULL, fee_ppm INTEGER NOT NULL,
               PRIMARY KEY (scid, time)) WITHOUT ROWID""",
    ),
    (  # 5: per-peer policies set by the operator (revenue-policy)
        """CREATE TABLE peer_policies (
               peer_id TEXT PRIMARY KEY,
               strategy TEXT NOT NULL,                    -- dynamic, static or passive
               fee_ppm INTEGER, min_fee_ppm INTEGER, max_fee_ppm INTEGER,
               rebalance TEXT NOT NULL,                   -- allow, never, source-only, destination-only
               expires_at REAL,                           -- unix seconds; NULL: never
               updated_at REAL NOT NULL)""",
    ),
    (  # 6: daily rollups for revenue-report, kept forever; whether a job's cost was read
        # Rolled from flow_hourly once a day has closed (roll_days), not at insert time:
        # upserting a second rollup per forward cost 25-30 % more insert time. The marks
        # 'daily_rolled_until' and 'daily_stale_from' say which days are complete here.
        """CREATE TABLE flow_daily (
               day INTEGER NOT NULL,                -- timestamp / 86400 (UTC days)
               channel TEXT NOT NULL,
               in_msat INTEGER NOT NULL, out_msat INTEGER NOT NULL,
               fee_msat INTEGER NOT NULL,           -- earned as the outgoing channel
               in_count INTEGER NOT NULL, out_count INTEGER NOT NULL,
               unmet_count INTEGER NOT NULL, unmet_msat INTEGER NOT NULL,
               PRIMARY KEY (day, channel)) WITHOUT ROWID""",
        # 0: sling's stats could not be read when the job ended; fee_paid_msat is what was
        # last seen and the budget charged the job its whole reservation.
        "ALTER TABLE rebalance_jobs ADD COLUMN cost_known INTEGER NOT NULL DEFAULT 1",
        "UPDATE rebalance_jobs SET cost_known = 0 WHERE end_reason LIKE '%charged the full reservation%'",
    ),
)


def tables_made_by(version: int) -> set:
    """The tables migrations 1..version create: how a file from before application_id is known."""
    return {m.group(1) for statements in MIGRATIONS[:version] for statement in statements
            for m in [re.match(r"\s*CREATE TABLE (\w+)", statement)] if m}


_INSERT_FORWARD = (
    "INSERT OR IGNORE INTO forwards (in_channel, in_htlc_id, out_channel, in_msat, out_msat,"
    " fee_msat, received_time, timestamp, created_index, updated_index)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

# Rolls the rows added since a rowid into flow_hourly (rowids only grow: no deletes).
_ROLLUP_OUT = (
    "INSERT INTO flow_hourly (hour, channel, out_msat, fee_msat, out_count)"
    " SELECT timestamp / 3600, out_channel, SUM(out_msat), SUM(fee_msat), COUNT(*)"
    " FROM forwards WHERE rowid > ? AND out_channel IS NOT NULL GROUP BY 1, 2"
    " ON CONFLICT (hour, channel) DO UPDATE SET out_msat = out_msat + excluded.out_msat,"
    " fee_msat = fee_msat + excluded.fee_msat, out_count = out_count + excluded.out_count")
_ROLLUP_IN = (
    "INSERT INTO flow_hourly (hour, channel, in_msat, in_count)"
    " SELECT timestamp / 3600, in_channel, SUM(in_msat), COUNT(*)"
    " FROM forwards WHERE rowid > ? GROUP BY 1, 2"
    " ON CONFLICT (hour, channel) DO UPDATE SET in_msat = in_msat + excluded.in_msat,"
    " in_count = in_count + excluded.in_count")


# flow_daily holds every day before DAILY_ROLLED_UNTIL exactly as flow_hourly sums it, except
# the days from DAILY_STALE_FROM on (hourly rows of theirs changed after they were rolled).
DAILY_ROLLED_UNTIL = "daily_rolled_until"
DAILY_STALE_FROM = "daily_stale_from"
# Bounds how long one roll holds the write lock (live forwards wait for it): 7 days of a
# 1 M-forward, 500-channel history took about 0.1 s (bench/bench_report.py).
ROLL_DAYS_PER_TRANSACTION = 7
_MARK_STALE = (
    "INSERT INTO marks (name, value) SELECT ?, ? WHERE ? < (SELECT value FROM marks WHERE name = ?)"
    " ON CONFLICT (name) DO UPDATE SET value = MIN(value, excluded.value)")
_ROLL_DAYS = (
    "INSERT INTO flow_daily SELECT hour / 24, channel, SUM(in_msat), SUM(out_msat), SUM(fee_msat),"
    " SUM(in_count), SUM(out_count), SUM(unmet_count), SUM(unmet_msat) FROM flow_hourly"
    " WHERE hour >= ? AND hour < ? GROUP BY 1, 2")
_SUMS = ("SUM(in_msat), SUM(out_msat), SUM(fee_msat), SUM(in_count), SUM(out_count),"
         " SUM(unmet_count), SUM(unmet_msat)")
# Whole days from flow_daily, the hours around them (the window's first partial day, the
# days not yet rolled or stale) from flow_hourly: exact to the hour, whatever the history.
_COUNTERS = "channel, in_msat, out_msat, fee_msat, in_count, out_count, unmet_count, unmet_msat"
_REPORT_FLOW = (
    f"SELECT channel, {_SUMS} FROM ("
    f" SELECT {_COUNTERS} FROM flow_hourly WHERE hour >= :since_hour AND hour < :first_day * 24"
    f" UNION ALL SELECT {_COUNTERS} FROM flow_daily WHERE day >= :first_day AND day < :rolled_day"
    f" UNION ALL SELECT {_COUNTERS} FROM flow_hourly WHERE hour >= :rolled_day * 24"
    ") GROUP BY channel")


def _mark_stale(tx: sqlite3.Connection, timestamp: float) -> None:
    """The hourly rows of the day holding `timestamp` changed: if that day was rolled, it is stale."""
    day = int(timestamp) // DAY_SECONDS
    tx.execute(_MARK_STALE, (DAILY_STALE_FROM, day, day, DAILY_ROLLED_UNTIL))


_INSERT_FAILED = (
    "INSERT OR IGNORE INTO failed_forwards (in_channel, in_htlc_id, out_channel, in_msat, failcode,"
    " received_time, created_index) VALUES (?, ?, ?, ?, ?, ?, ?)")
_ROLLUP_UNMET = (
    "INSERT INTO flow_hourly (hour, channel, unmet_count, unmet_msat)"
    " SELECT CAST(received_time AS INTEGER) / 3600, out_channel, COUNT(*), SUM(in_msat)"
    " FROM failed_forwards WHERE rowid > ? AND out_channel IS NOT NULL AND failcode = ? GROUP BY 1, 2"
    " ON CONFLICT (hour, channel) DO UPDATE SET unmet_count = unmet_count + excluded.unmet_count,"
    " unmet_msat = unmet_msat + excluded.unmet_msat")


def _htlc_key(fwd: Forward) -> Optional[int]:
    if fwd.in_htlc_id is not None:
        return fwd.in_htlc_id
    # Very old rows lack in_htlc_id; a negative stand-in cannot collide with real ids.
    return None if fwd.created_index is None else -int(fwd.created_index)


def failed_row(fwd: Forward) -> Optional[tuple]:
    """The failed_forwards row of a local_failed forward, or None when it cannot be keyed."""
    htlc_id = _htlc_key(fwd)
    if htlc_id is None:
        return None
    return (fwd.in_channel, htlc_id, fwd.out_channel, fwd.in_msat, fwd.failcode,
            fwd.received_time, fwd.created_index)


# One forward's share of the rollups, added (sign 1) or taken back (sign -1).
_ROLLUP_ONE_OUT = (
    "INSERT INTO flow_hourly (hour, channel, out_msat, fee_msat, out_count) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (hour, channel) DO UPDATE SET out_msat = out_msat + excluded.out_msat,"
    " fee_msat = fee_msat + excluded.fee_msat, out_count = out_count + excluded.out_count")
_ROLLUP_ONE_IN = (
    "INSERT INTO flow_hourly (hour, channel, in_msat, in_count) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (hour, channel) DO UPDATE SET in_msat = in_msat + excluded.in_msat,"
    " in_count = in_count + excluded.in_count")
_STORED_FORWARD = (
    "SELECT in_channel, in_htlc_id, out_channel, in_msat, out_msat, fee_msat, received_time, timestamp,"
    " created_index, updated_index FROM forwards WHERE in_channel = ? AND in_htlc_id = ? AND rowid <= ?")
_REPLACE_FORWARD = (
    "UPDATE forwards SET out_channel = ?, in_msat = ?, out_msat = ?, fee_msat = ?, received_time = ?,"
    " timestamp = ?, created_index = COALESCE(?, created_index), updated_index = COALESCE(?, updated_index)"
    " WHERE in_channel = ? AND in_htlc_id = ?")


def forward_row(fwd: Forward) -> Optional[tuple]:
    """The forwards row of a settled forward, or None when it cannot be keyed."""
    htlc_id = _htlc_key(fwd)
    if htlc_id is None:
        return None
    resolved = fwd.resolved_time if fwd.resolved_time is not None else fwd.received_time
    return (fwd.in_channel, htlc_id, fwd.out_channel, fwd.in_msat, fwd.out_msat, fwd.fee_msat,
            fwd.received_time, int(resolved), fwd.created_index, fwd.updated_index)


def _differs(stored: tuple, row: tuple) -> bool:
    """Amounts, channels or times differ, or the row knows an index the stored one has not."""
    return (stored[2:8] != row[2:8]
            or (row[8] is not None and row[8] != stored[8])
            or (row[9] is not None and row[9] != stored[9]))


def _mark(conn: sqlite3.Connection, name: str) -> Optional[int]:
    row = conn.execute("SELECT value FROM marks WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def _rollup_one(tx: sqlite3.Connection, row: tuple, sign: int) -> None:
    in_channel, _, out_channel, in_msat, out_msat, fee_msat, _, timestamp = row[:8]
    hour = timestamp // HOUR_SECONDS
    if out_channel is not None:
        tx.execute(_ROLLUP_ONE_OUT, (hour, out_channel, sign * out_msat, sign * fee_msat, sign))
    tx.execute(_ROLLUP_ONE_IN, (hour, in_channel, sign * in_msat, sign))


class Database:
    def __init__(self, path: str, log: Optional[Callable[[str, str], None]] = None,
                 faults: Optional[StorageFaults] = None):
        self.path = path
        self.log = log or (lambda message, level: None)
        self.faults = faults if faults is not None else StorageFaults.from_env()
        self._local = threading.local()
        self._connections: List[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._identity: Optional[FileIdentity] = None
        self._gone: Optional[str] = None
        self._storage_fault: Optional[str] = None
        # hourly rollups as the fee cycle last read them: (first hour, rows by channel); the
        # hours from _touched_hour on are read again (every write to them records its hour)
        self._hourly: Optional[Tuple[int, Dict[str, List[tuple]]]] = None
        self._touched_hour: Optional[int] = None
        self._hourly_lock = threading.Lock()

    # --- the file ----------------------------------------------------------------
    def _open_file(self) -> None:
        """Once: checks, only reading, that the file is ours, then adopts it (caller holds _lock)."""
        if self._gone:
            raise DatabaseGone(self._gone)
        make_private_dirs(os.path.dirname(os.path.abspath(self.path)))
        created = create_private_file(self.path)
        identity = FileIdentity(self.path)
        try:
            if not created:
                inspect(self.path, len(MIGRATIONS), tables_made_by)
            if identity.problem():
                raise DatabaseRefused(f"it {identity.problem()} while it was being checked")
        except BaseException:
            identity.close()
            raise
        self._identity = identity
        self._narrow_modes()

    def _narrow_modes(self) -> None:
        for failure in narrow_modes(self.path):
            self.log(f"Database: cannot make {failure} private (mode 0600)", "warn")

    def check_present(self) -> None:
        """Raises DatabaseGone unless the path still names the file we opened (one stat)."""
        if self._gone is None and self._identity is not None:
            problem = self._identity.problem()
            if problem:
                self._abandon(problem)
        if self._gone:
            raise DatabaseGone(self._gone)

    def _abandon(self, problem: str) -> None:
        """The path no longer names our file: stop using it, and leave the path clean.

        Our last transactions are checkpointed into the old file (a file moved away is then
        whole), and the -wal at the path is emptied, so nothing of ours is replayed into a
        file put there. Every later use of the database raises DatabaseGone.
        """
        with self._lock:
            if self._gone is not None:
                return
            self._gone = (f"the database file {self.path} {problem} while cl-revenue-ops ran;"
                          " writes are refused until the plugin is restarted")
            conn = getattr(self._local, "conn", None) or next(iter(self._connections), None)
        self.log(f"Database: {self._gone}", "warn")
        try:
            busy = conn is not None and sqlite3.Connection.execute(
                conn, "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as e:
            busy = str(e)
        if busy:
            self.log(f"Database: could not empty {self.path}-wal ({busy}); remove it and "
                     f"{self.path}-shm before anything opens a file at {self.path}", "warn")

    def problem(self) -> Optional[str]:
        """What is wrong with the storage now, for revenue-status; None when nothing is."""
        try:
            self.check_present()
        except DatabaseGone as e:
            return str(e)
        return self._storage_fault

    def _on_storage_fault(self, conn: StoreConnection, error: sqlite3.Error) -> None:
        with self._lock:
            first = self._storage_fault is None
            self._storage_fault = (f"the last write failed: {error}; each connection that hit it is"
                                   " reopened on its next use")
        if first:
            self.log(f"Database: storage fault ({error}); the connection is replaced on next use", "warn")

    def _stored(self) -> None:
        if self._storage_fault is not None:
            with self._lock:
                was, self._storage_fault = self._storage_fault, None
            if was:
                self.log("Database: writes succeed again", "info")

    # --- connections -------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._gone:
            raise DatabaseGone(self._gone)
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.fault is not None:
            self.release_thread()   # it hit a storage fault: a fresh one may work
            conn = None
        if conn is None:
            conn = self._connect()
        if self.faults is not None:
            self.faults.apply(conn)
        return conn

    def _connect(self) -> StoreConnection:
        with self._lock:
            if self._identity is None:
                self._open_file()
        self.check_present()   # never open (let alone create) a file that is not ours
        read_only = self.faults is not None and "readonly" in self.faults.active()
        conn = sqlite3.connect(file_uri(self.path, "ro" if read_only else "rw"), uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False, factory=StoreConnection)
        conn.on_fault = self._on_storage_fault
        conn.opened_in_fault = self._storage_fault is not None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # 8 MiB (default 2): the hot index leaves of every channel stay cached while
            # hydrating; measured 11.4 -> 4.4 s of inserts for 1 M forwards.
            conn.execute("PRAGMA cache_size = -8192")
        except sqlite3.Error:
            conn.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue, not deadlock."""
        conn = self._conn()
        if conn.opened_in_fault:   # SQLite may have opened it read-only: write on a fresh one
            self.release_thread()
            conn = self._conn()
            conn.opened_in_fault = False
        self.check_present()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:   # a failed COMMIT (disk full) must not leave it open
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    conn.fault = conn.fault or "rollback failed"   # replaced on next use
            raise
        self._stored()

    def release_thread(self) -> None:
        """Closes the calling thread's connection (for short-lived threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
            if self._identity is not None:   # after the connections: it would drop their locks
                self._identity.close()
                self._identity = None
        self._local = threading.local()

    # --- schema --------------------------------------------------------------
    def migrate(self) -> int:
        """Runs the migrations not yet applied; returns the schema version."""
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):   # a file empty at the check, its content in a -wal
            raise DatabaseRefused(f"its schema version {version} is newer than this cl-revenue-ops"
                                  f" knows ({len(MIGRATIONS)})")
        unmarked = conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._write() as tx:
                for statement in statements:
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {number}")
                if unmarked:
                    tx.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    unmarked = False
        if unmarked:   # a file from before the id: ours by its tables, marked now
            with self._write() as tx:
                tx.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self._narrow_modes()   # the -wal and -shm exist now
        return conn.execute("PRAGMA user_version").fetchone()[0]

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    # --- forwards ------------------------------------------------------------
    def store_forwards(self, forwards: Iterable[Forward], marks: Optional[Dict[str, int]] = None,
                       authoritative: bool = False) -> int:
        """Stores the settled ones and the local_failed ones (idempotent) and moves marks,
        in one transaction. A local_failed forward is kept apart: never revenue, but the
        demand a channel could not serve.

        Returns how many settled forwards were new. A mark only ever moves up. `authoritative`:
        the forwards are listforwards rows, the node's own record; a stored settled row that
        differs (it came from a live event) is replaced, and the rollups move with it.
        """
        settled, failed = [], []
        for f in forwards:
            if f.is_settled:
                settled.append(f)
            elif f.status == LOCAL_FAILED:
                failed.append(f)
        rows = [row for row in map(forward_row, settled) if row]
        failed_rows = [row for row in map(failed_row, failed) if row]
        touched = [row[7] for row in rows] + [row[5] for row in failed_rows]
        try:
            return self._store_rows(rows, failed_rows, marks, authoritative, touched)
        finally:   # after the commit: the next read of the rollups reads these hours again
            if touched:
                self._touch(min(touched))

    def _touch(self, timestamp: float) -> None:
        with self._hourly_lock:
            hour = int(timestamp) // HOUR_SECONDS
            self._touched_hour = hour if self._touched_hour is None else min(self._touched_hour, hour)

    def _store_rows(self, rows: List[tuple], failed_rows: List[tuple], marks: Optional[Dict[str, int]],
                    authoritative: bool, touched: List[float]) -> int:
        with self._write() as tx:
            added = 0
            if rows:
                before = tx.execute("SELECT COALESCE(MAX(rowid), 0) FROM forwards").fetchone()[0]
                tx.executemany(_INSERT_FORWARD, rows)
                added = tx.execute("SELECT COALESCE(MAX(rowid), 0) FROM forwards").fetchone()[0] - before
                if added:
                    tx.execute(_ROLLUP_OUT, (before,))
                    tx.execute(_ROLLUP_IN, (before,))
                    _mark_stale(tx, min(row[7] for row in rows))
                if authoritative and added < len(rows):   # some were stored already: do they agree?
                    touched.extend(self._replace_differing(tx, rows, before))
            if failed_rows:
                before = tx.execute("SELECT COALESCE(MAX(rowid), 0) FROM failed_forwards").fetchone()[0]
                tx.executemany(_INSERT_FAILED, failed_rows)
                tx.execute(_ROLLUP_UNMET, (before, TEMPORARY_CHANNEL_FAILURE))
                _mark_stale(tx, min(row[5] for row in failed_rows))
            for name, value in (marks or {}).items():
                tx.execute("INSERT INTO marks (name, value) VALUES (?, ?) ON CONFLICT (name)"
                           " DO UPDATE SET value = MAX(value, excluded.value)", (name, value))
        return added

    @staticmethod
    def _replace_differing(tx: sqlite3.Connection, rows: List[tuple], before: int) -> List[float]:
        """Rewrites the rows stored before this call (rowid <= before) that a page contradicts;
        returns the times of the rows it rewrote (their hours' rollups changed)."""
        rewritten = []
        for row in rows:
            stored = tx.execute(_STORED_FORWARD, (row[0], row[1], before)).fetchone()
            if stored is None or not _differs(stored, row):
                continue
            _rollup_one(tx, stored, -1)
            tx.execute(_REPLACE_FORWARD, row[2:] + row[:2])
            _rollup_one(tx, row, 1)
            _mark_stale(tx, min(stored[7], row[7]))
            rewritten.append(stored[7])
        return rewritten

    def get_mark(self, name: str) -> Optional[int]:
        row = self._conn().execute("SELECT value FROM marks WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_mark(self, name: str, value: int) -> None:
        with self._write() as tx:
            tx.execute("INSERT INTO marks (name, value) VALUES (?, ?) ON CONFLICT (name)"
                       " DO UPDATE SET value = excluded.value", (name, value))

    def forwards_count(self) -> int:
        # MAX(rowid) is O(1) and exact while rows are never deleted.
        return self._conn().execute("SELECT COALESCE(MAX(rowid), 0) FROM forwards").fetchone()[0]

    def file_size_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    # --- flow ----------------------------------------------------------------
    def get_flow_aggregation(self, since: float) -> Dict[str, FlowTotals]:
        """Every channel's totals since `since` (spec feature 20), in one grouped query.

        Reads the hourly rollups, so the window starts at the hour that holds `since`.
        """
        rows = self._conn().execute(self.FLOW_AGGREGATION_SQL, (int(since) // HOUR_SECONDS,))
        return {r[0]: FlowTotals(*r) for r in rows}

    def failed_forwards_count(self) -> int:
        return self._conn().execute("SELECT COALESCE(MAX(rowid), 0) FROM failed_forwards").fetchone()[0]

    def hourly_flow_since(self, since: float) -> Dict[str, List[tuple]]:
        """Per channel, its hourly rollup rows from the hour that holds `since`:
        (hour, out_count, out_msat, fee_msat, unmet_count, unmet_msat, in_msat), oldest first.
        The evidence a fee decision learns demand from.

        Kept between calls: only the hours written since the last call are read again (a
        fee cycle on a large node read 100 k unchanged rows every time). The lists returned
        are never changed afterwards (a later call builds new ones). One reader: the fee
        cycle (a second concurrent caller could keep an older read)."""
        since_hour = int(since) // HOUR_SECONDS
        with self._hourly_lock:
            cached, touched = self._hourly, self._touched_hour
            self._touched_hour = None
        try:
            if cached is None or since_hour < cached[0]:
                by_channel = self._hourly_rows(since_hour)
            else:
                by_channel = dict(cached[1])
                if touched is not None:
                    reread = max(touched, since_hour)
                    fresh = self._hourly_rows(reread)
                    for channel in set(by_channel) | set(fresh):
                        kept = by_channel.get(channel, [])
                        by_channel[channel] = kept[:bisect.bisect_left(kept, (reread,))] + fresh.get(channel, [])
                for channel, rows in list(by_channel.items()):
                    start = bisect.bisect_left(rows, (since_hour,))
                    if start == len(rows):
                        del by_channel[channel]        # nothing left in the window
                    elif start:
                        by_channel[channel] = rows[start:]
        except BaseException:   # the hours written are still to be read again
            if touched is not None:
                self._touch(touched * HOUR_SECONDS)
            raise
        with self._hourly_lock:
            self._hourly = (since_hour, by_channel)
        return dict(by_channel)

    def _hourly_rows(self, from_hour: int) -> Dict[str, List[tuple]]:
        by_channel: Dict[str, List[tuple]] = {}
        # the primary key (hour, channel) gives hour order without a sort
        for r in self._conn().execute(
                "SELECT channel, hour, out_count, out_msat, fee_msat, unmet_count, unmet_msat, in_msat"
                " FROM flow_hourly WHERE hour >= ?", (from_hour,)):
            rows = by_channel.get(r[0])
            if rows is None:
                rows = by_channel[r[0]] = []
            rows.append(r[1:])
        return by_channel

    # --- daily rollups (revenue-report) ------------------------------------------------
    def roll_days(self, now: float) -> int:
        """Rolls every closed day (before the UTC day holding `now`) not rolled yet, and the
        stale ones, from flow_hourly into flow_daily; returns how many days it rolled.

        A rolled day is replaced whole, so pruning hourly rows (nothing does today) must
        leave every day from the stale mark on."""
        today = int(now) // DAY_SECONDS
        rolled = 0
        while True:
            with self._write() as tx:
                until = _mark(tx, DAILY_ROLLED_UNTIL)
                stale = _mark(tx, DAILY_STALE_FROM)
                if until is None:   # never rolled: from the first hour there is
                    first_hour = tx.execute("SELECT MIN(hour) FROM flow_hourly").fetchone()[0]
                    until = today if first_hour is None else min(today, first_hour // 24)
                    tx.execute("INSERT INTO marks VALUES (?, ?)", (DAILY_ROLLED_UNTIL, until))
                start = until if stale is None else min(stale, until)
                if start >= today:
                    return rolled
                end = min(today, start + ROLL_DAYS_PER_TRANSACTION)
                tx.execute("DELETE FROM flow_daily WHERE day >= ? AND day < ?", (start, end))
                tx.execute(_ROLL_DAYS, (start * 24, end * 24))
                tx.execute("INSERT OR REPLACE INTO marks VALUES (?, ?)", (DAILY_ROLLED_UNTIL, max(until, end)))
                if stale is not None and end < until:
                    tx.execute("INSERT OR REPLACE INTO marks VALUES (?, ?)", (DAILY_STALE_FROM, end))
                else:
                    tx.execute("DELETE FROM marks WHERE name = ?", (DAILY_STALE_FROM,))
            rolled += end - start

    def report_flow(self, since: Optional[float]) -> Dict[str, FlowTotals]:
        """Every channel's totals from the hour holding `since` (None: its whole history),
        read from the daily rollups wherever a whole rolled day lies in the window."""
        since_hour = 0 if since is None else max(0, int(since) // HOUR_SECONDS)
        first_day = -(-since_hour // 24)
        conn = self._conn()
        conn.execute("BEGIN")   # the marks and the rows from one snapshot
        try:
            until = _mark(conn, DAILY_ROLLED_UNTIL) or 0
            stale = _mark(conn, DAILY_STALE_FROM)
            rolled_day = max(first_day, until if stale is None else min(stale, until))
            rows = conn.execute(_REPORT_FLOW, {"first_day": first_day, "rolled_day": rolled_day,
                                               "since_hour": since_hour}).fetchall()
        finally:
            conn.execute("COMMIT")
        # a row corrected away (the node's record moved a forward) leaves zeros: no activity
        return {r[0]: FlowTotals(*r) for r in rows if any(r[1:])}

    # --- fee history ---------------------------------------------------------------
    def fee_history_since(self, since: float) -> Dict[str, List[Tuple[float, int]]]:
        """Per channel, (time, fee ppm) of each fee it had from `since` on, oldest first; the
        fee in force at `since` (the last one before it) comes first, timed at its own time."""
        conn = self._conn()
        by_scid: Dict[str, List[Tuple[float, int]]] = {}
        for scid, t, fee in conn.execute(
                "SELECT h.scid, h.time, h.fee_ppm FROM fee_history h JOIN"
                " (SELECT scid, MAX(time) AS t FROM fee_history WHERE time < ? GROUP BY scid) b"
                " ON h.scid = b.scid AND h.time = b.t", (since,)):
            by_scid[scid] = [(t, fee)]
        for scid, t, fee in conn.execute(
                "SELECT scid, time, fee_ppm FROM fee_history WHERE time >= ? ORDER BY scid, time", (since,)):
            by_scid.setdefault(scid, []).append((t, fee))
        return by_scid

    def record_fees(self, fees: Iterable[Tuple[str, int]], now: float) -> None:
        """Appends (scid, fee ppm) at `now`; the caller records only changes."""
        with self._write() as tx:
            tx.executemany("INSERT OR REPLACE INTO fee_history VALUES (?, ?, ?)",
                           [(scid, now, fee) for scid, fee in fees])

    def delete_fee_history(self, scids: Iterable[str]) -> int:
        with self._write() as tx:
            return tx.executemany("DELETE FROM fee_history WHERE scid = ?", [(s,) for s in scids]).rowcount

    def channel_volume_since(self, scid: str, since: float) -> FlowTotals:
        """One channel's exact totals since a timestamp (inclusive), from the forwards themselves."""
        conn = self._conn()
        out = conn.execute(self.CHANNEL_OUT_SQL, (scid, int(since))).fetchone()
        inn = conn.execute(self.CHANNEL_IN_SQL, (scid, int(since))).fetchone()
        return FlowTotals(scid, in_msat=inn[0], out_msat=out[0], fees_earned_msat=out[1],
                          in_count=inn[1], out_count=out[2])

    # --- flow results ------------------------------------------------------------
    def save_flow_results(self, flows: Iterable[ChannelFlow]) -> None:
        with self._write() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO flow_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(f.short_channel_id, f.in_msat, f.out_msat, f.fees_earned_msat, f.in_count,
                  f.out_count, f.flow_ratio, f.daily_volume_msat, f.daily_out_msat, f.state,
                  f.updated_at, f.unmet_count, f.unmet_msat) for f in flows])

    def load_flow_results(self) -> Dict[str, ChannelFlow]:
        rows = self._conn().execute(
            "SELECT scid, in_msat, out_msat, fees_earned_msat, in_count, out_count, flow_ratio,"
            " daily_volume_msat, daily_out_msat, state, updated_at, unmet_count, unmet_msat"
            " FROM flow_results")
        return {r[0]: ChannelFlow(*r) for r in rows}

    def delete_flow_results(self, scids: Iterable[str]) -> int:
        with self._write() as tx:
            return tx.executemany("DELETE FROM flow_results WHERE scid = ?",
                                  [(s,) for s in scids]).rowcount

    # --- fee controller ---------------------------------------------------------
    def load_fee_states(self) -> Dict[str, str]:
        """scid -> the controller state as JSON text (the controller owns its shape)."""
        return dict(self._conn().execute("SELECT scid, state_json FROM fee_state"))

    def save_fee_cycle(self, states: Dict[str, str], decisions: Iterable[tuple], now: float) -> None:
        """Persists states and the cycle's decisions together: both or neither.

        decisions: (scid, action, old_fee_ppm, new_fee_ppm, applied, detail_json).
        """
        with self._write() as tx:
            tx.executemany("INSERT OR REPLACE INTO fee_state VALUES (?, ?, ?)",
                           [(scid, state, now) for scid, state in states.items()])
            tx.executemany(
                "INSERT INTO fee_decisions (scid, time, action, old_fee_ppm, new_fee_ppm, applied,"
                " detail_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(d[0], now, d[1], d[2], d[3], int(d[4]), d[5]) for d in decisions])

    def delete_fee_states(self, scids: Iterable[str]) -> int:
        with self._write() as tx:
            return tx.executemany("DELETE FROM fee_state WHERE scid = ?",
                                  [(s,) for s in scids]).rowcount

    def last_fee_decisions(self) -> Dict[str, dict]:
        """The newest decision of every channel."""
        rows = self._conn().execute(
            "SELECT d.scid, d.time, d.action, d.old_fee_ppm, d.new_fee_ppm, d.applied, d.detail_json"
            " FROM fee_decisions d JOIN (SELECT scid, MAX(id) AS id FROM fee_decisions GROUP BY scid) m"
            " ON d.id = m.id")
        return {r[0]: {"time": r[1], "action": r[2], "old_fee_ppm": r[3], "new_fee_ppm": r[4],
                       "applied": bool(r[5]), "detail_json": r[6]} for r in rows}

    def fees_earned_since(self, since_by_scid: Dict[str, float]) -> Dict[str, Tuple[int, int]]:
        """(fees earned as outgoing channel, forwards out) since each channel's own time.

        Exact, one index range per channel: a fee cycle reads only what it judges.
        """
        conn = self._conn()
        return {scid: conn.execute(
            "SELECT COALESCE(SUM(fee_msat), 0), COUNT(*) FROM forwards"
            " WHERE out_channel = ? AND timestamp >= ?", (scid, int(since))).fetchone()
            for scid, since in since_by_scid.items()}

    def fees_earned_by_hours(self, from_hour: int = 0, to_hour: Optional[int] = None) -> Dict[str, int]:
        """Fees earned as the outgoing channel, per channel, over the rollup hours
        [from_hour, to_hour) (to_hour None: to the newest), msat. The whole history is a full
        scan of the rollups; a short recent range is an index range (the key starts with hour)."""
        sql = "SELECT channel, SUM(fee_msat) FROM flow_hourly WHERE hour >= ?"
        params: List[int] = [from_hour]
        if to_hour is not None:
            sql += " AND hour < ?"
            params.append(to_hour)
        return dict(self._conn().execute(sql + " GROUP BY channel", params))

    def channels_that_routed_out(self, scids: Iterable[str]) -> set:
        """Which of these channels ever carried a forward out (one index probe each)."""
        conn = self._conn()
        return {scid for scid in scids if conn.execute(
            "SELECT 1 FROM forwards WHERE out_channel = ? LIMIT 1", (scid,)).fetchone()}

    def clboss_unmanaged_peers(self) -> set:
        return {r[0] for r in self._conn().execute("SELECT peer_id FROM clboss_unmanaged")}

    def mark_clboss_unmanaged(self, peer_id: str, now: float) -> None:
        with self._write() as tx:
            tx.execute("INSERT OR IGNORE INTO clboss_unmanaged VALUES (?, ?)", (peer_id, now))

    # --- rebalancing ------------------------------------------------------------
    def _budget_usage(self, conn: sqlite3.Connection, now: float) -> Tuple[int, int]:
        """The ledger's one rule (see modules/budget.py): fees reconciled inside the window,
        plus every reservation not yet reconciled, whatever its age."""
        spent = conn.execute("SELECT COALESCE(SUM(spent_msat), 0) FROM budget_ledger"
                             " WHERE reconciled_at > ?", (now - BUDGET_WINDOW_SECONDS,)).fetchone()[0]
        reserved = conn.execute("SELECT COALESCE(SUM(reserved_msat), 0) FROM budget_ledger"
                                " WHERE reconciled_at IS NULL").fetchone()[0]
        return spent, reserved

    def budget_usage(self, now: float) -> Tuple[int, int]:
        """(fees spent in the last 24 h, fees reserved by running jobs), msat."""
        return self._budget_usage(self._conn(), now)

    def start_job_reserving(self, job: Dict[str, Any], reserve_msat: int,
                            fits: Callable[[int, int, int], bool], now: float) -> Optional[int]:
        """Records a job and reserves its worst-case fee in one transaction.

        `fits(spent_msat, reserved_msat, reserve_msat)` is the budget rule; it sees the
        ledger as it is inside the transaction, so two callers can never both pass on
        the same headroom. Returns the job id, or None when the budget does not fit.
        """
        with self._write() as tx:
            spent, reserved = self._budget_usage(tx, now)
            if not fits(spent, reserved, reserve_msat):
                return None
            job_id = tx.execute(
                "INSERT INTO rebalance_jobs (scid, started_at, status, amount_msat, chunk_sats,"
                " max_ppm, candidates_json, target, manual, baseline_json)"
                " VALUES (?, ?, 'starting', ?, ?, ?, ?, ?, ?, ?)",
                (job["scid"], now, job["amount_msat"], job["chunk_sats"], job["max_ppm"],
                 json.dumps(job["candidates"]), job["target"], int(job.get("manual", False)),
                 json.dumps(job.get("baseline", {})))).lastrowid
            tx.execute("INSERT INTO budget_ledger (job_id, reserved_msat, reserved_at) VALUES (?, ?, ?)",
                       (job_id, reserve_msat, now))
        return job_id

    def mark_job_running(self, job_id: int) -> None:
        with self._write() as tx:   # never revives a job that was ended meanwhile
            tx.execute("UPDATE rebalance_jobs SET status = 'running' WHERE id = ? AND status = 'starting'",
                       (job_id,))

    def update_job_progress(self, job_id: int, moved_msat: int, fee_paid_msat: int, failures: int) -> None:
        with self._write() as tx:
            tx.execute("UPDATE rebalance_jobs SET moved_msat = ?, fee_paid_msat = ?, failures = ? WHERE id = ?",
                       (moved_msat, fee_paid_msat, failures, job_id))

    def end_job(self, job_id: int, status: str, reason: str, moved_msat: int, fee_paid_msat: int,
                failures: int, now: float, charged_msat: Optional[int] = None,
                cost_known: bool = True) -> None:
        """Closes a job and turns its reservation into what it is charged: the fee it paid,
        unless told otherwise (its cost unknown: the reservation)."""
        charged = fee_paid_msat if charged_msat is None else charged_msat
        with self._write() as tx:
            tx.execute("UPDATE rebalance_jobs SET status = ?, end_reason = ?, ended_at = ?,"
                       " moved_msat = ?, fee_paid_msat = ?, failures = ?, cost_known = ? WHERE id = ?",
                       (status, reason, now, moved_msat, fee_paid_msat, failures, int(cost_known), job_id))
            tx.execute("UPDATE budget_ledger SET spent_msat = ?, reconciled_at = ? WHERE job_id = ?",
                       (charged, now, job_id))

    def ledger_is_empty(self) -> bool:
        return self._conn().execute("SELECT 1 FROM budget_ledger LIMIT 1").fetchone() is None

    def record_outside_spend(self, amount_msat: int, now: float) -> int:
        """Counts fees paid outside the ledger's knowledge (a lost database) as spent now.

        Such an entry has no job: it takes a negative id, below every job's (rowids > 0).
        """
        with self._write() as tx:
            entry = tx.execute("SELECT MIN(0, COALESCE(MIN(job_id), 0)) - 1 FROM budget_ledger").fetchone()[0]
            tx.execute("INSERT INTO budget_ledger (job_id, reserved_msat, spent_msat, reserved_at,"
                       " reconciled_at) VALUES (?, ?, ?, ?, ?)", (entry, amount_msat, amount_msat, now, now))
        return entry

    def outside_spend(self, now: float) -> Tuple[int, Optional[float]]:
        """(msat counted by record_outside_spend still inside the window, when the newest was)."""
        return tuple(self._conn().execute(
            "SELECT COALESCE(SUM(spent_msat), 0), MAX(reconciled_at) FROM budget_ledger"
            " WHERE job_id < 0 AND reconciled_at > ?", (now - BUDGET_WINDOW_SECONDS,)).fetchone())

    def running_jobs(self) -> List[Dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT j.id, j.scid, j.status, j.started_at, j.amount_msat, j.chunk_sats, j.max_ppm,"
            " j.candidates_json, j.target, j.moved_msat, j.fee_paid_msat, j.failures, j.baseline_json,"
            " j.manual, b.reserved_msat FROM rebalance_jobs j JOIN budget_ledger b ON b.job_id = j.id"
            " WHERE j.status IN ('starting', 'running') ORDER BY j.id")
        keys = ("id", "scid", "status", "started_at", "amount_msat", "chunk_sats", "max_ppm", "candidates",
                "target", "moved_msat", "fee_paid_msat", "failures", "baseline", "manual", "reserved_msat")
        jobs = [dict(zip(keys, r)) for r in rows]
        for job in jobs:
            job["candidates"] = json.loads(job["candidates"])
            job["baseline"] = json.loads(job["baseline"])
            job["manual"] = bool(job["manual"])
        return jobs

    def recent_jobs(self, limit: int = 20) -> List[Dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT id, scid, started_at, ended_at, status, end_reason, amount_msat, max_ppm, moved_msat,"
            " fee_paid_msat FROM rebalance_jobs WHERE status NOT IN ('starting', 'running') ORDER BY id DESC LIMIT ?",
            (limit,))
        keys = ("id", "scid", "started_at", "ended_at", "status", "end_reason", "amount_msat",
                "max_ppm", "moved_msat", "fee_paid_msat")
        return [dict(zip(keys, r)) for r in rows]

    def rebalance_cost_ppm(self) -> Dict[str, int]:
        """Average fee paid per moved msat into each channel, over finished jobs, in ppm."""
        rows = self._conn().execute(
            "SELECT scid, SUM(fee_paid_msat), SUM(moved_msat) FROM rebalance_jobs"
            " WHERE status NOT IN ('starting', 'running') AND moved_msat > 0 GROUP BY scid")
        return {r[0]: int(r[1] * 1_000_000 // r[2]) for r in rows}

    def rebalance_spend_since(self, since: Optional[float]) -> Dict[str, RebalanceSpend]:
        """Per destination channel, the jobs that ended since `since` (None: all) and those
        still running, with what sling's stats said each moved and paid."""
        rows = self._conn().execute(
            "SELECT scid, COUNT(*), SUM(moved_msat), SUM(fee_paid_msat),"
            " SUM(status IN ('starting', 'running')), SUM(cost_known = 0) FROM rebalance_jobs"
            " WHERE ended_at IS NULL OR ended_at >= ? GROUP BY scid",
            (-1.0 if since is None else since,))
        return {r[0]: RebalanceSpend(*r) for r in rows}

    def rebalance_totals(self) -> Dict[str, Tuple[int, int]]:
        """Per destination channel, over every job (running ones so far): (moved_msat, fee_paid_msat)."""
        rows = self._conn().execute(
            "SELECT scid, SUM(moved_msat), SUM(fee_paid_msat) FROM rebalance_jobs GROUP BY scid")
        return {r[0]: (r[1], r[2]) for r in rows}

    def record_failure(self, scid: str, role: str, now: float, count: int = 1) -> None:
        with self._write() as tx:
            tx.execute("INSERT INTO channel_failures VALUES (?, ?, ?, ?) ON CONFLICT (scid, role)"
                       " DO UPDATE SET failure_count = failure_count + excluded.failure_count,"
                       " last_failure_time = excluded.last_failure_time", (scid, role, count, now))

    def clear_failures(self, scid: str, role: str) -> None:
        with self._write() as tx:
            tx.execute("DELETE FROM channel_failures WHERE scid = ? AND role = ?", (scid, role))

    def failures(self, role: str) -> Dict[str, Tuple[int, float]]:
        rows = self._conn().execute(
            "SELECT scid, failure_count, last_failure_time FROM channel_failures WHERE role = ?", (role,))
        return {r[0]: (r[1], r[2]) for r in rows}

    def delete_failures(self, scids: Iterable[str], role: str) -> int:
        with self._write() as tx:
            return tx.executemany("DELETE FROM channel_failures WHERE scid = ? AND role = ?",
                                  [(s, role) for s in scids]).rowcount

    def save_rebalance_decisions(self, decisions: Iterable[Tuple[str, str, str]], now: float) -> None:
        """decisions: (scid, action, detail_json)."""
        with self._write() as tx:
            tx.executemany("INSERT INTO rebalance_decisions (time, scid, action, detail_json) VALUES (?, ?, ?, ?)",
                           [(now, d[0], d[1], d[2]) for d in decisions])

    # --- peer policies -------------------------------------------------------------
    POLICY_COLUMNS = ("peer_id", "strategy", "fee_ppm", "min_fee_ppm", "max_fee_ppm", "rebalance",
                      "expires_at", "updated_at")

    def save_peer_policy(self, policy: Dict[str, Any]) -> None:
        """Stores a peer's policy, replacing the one it had."""
        with self._write() as tx:
            tx.execute(f"INSERT OR REPLACE INTO peer_policies ({', '.join(self.POLICY_COLUMNS)})"
                       f" VALUES ({', '.join('?' * len(self.POLICY_COLUMNS))})",
                       [policy[c] for c in self.POLICY_COLUMNS])

    def peer_policies(self) -> List[Dict[str, Any]]:
        """Every stored policy (expired ones too), by peer id."""
        rows = self._conn().execute(
            f"SELECT {', '.join(self.POLICY_COLUMNS)} FROM peer_policies ORDER BY peer_id")
        return [dict(zip(self.POLICY_COLUMNS, r)) for r in rows]

    def delete_peer_policy(self, peer_id: str) -> bool:
        with self._write() as tx:
            return tx.execute("DELETE FROM peer_policies WHERE peer_id = ?", (peer_id,)).rowcount > 0

    def explain(self, sql: str, params: Sequence[Any] = ()) -> List[str]:
        """EXPLAIN QUERY PLAN details, for tests and benches that check index use."""
        return [row[-1] for row in self._conn().execute("EXPLAIN QUERY PLAN " + sql, params)]

    FLOW_AGGREGATION_SQL = ("SELECT channel, SUM(in_msat), SUM(out_msat), SUM(fee_msat), SUM(in_count),"
                            " SUM(out_count), SUM(unmet_count), SUM(unmet_msat) FROM flow_hourly"
                            " WHERE hour >= ? GROUP BY channel")
    CHANNEL_OUT_SQL = ("SELECT COALESCE(SUM(out_msat), 0), COALESCE(SUM(fee_msat), 0), COUNT(*) FROM forwards"
                       " WHERE out_channel = ? AND timestamp >= ?")
    CHANNEL_IN_SQL = ("SELECT COALESCE(SUM(in_msat), 0), COUNT(*) FROM forwards"
                      " WHERE in_channel = ? AND timestamp >= ?")
    # The v1.4.0 spec's query, kept for the benchmark's comparison: it has no direction.
    SPEC_OR_SQL = ("SELECT SUM(in_msat), SUM(out_msat) FROM forwards"
                   " WHERE (in_channel = ? OR out_channel = ?) AND timestamp > ?")
