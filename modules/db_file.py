"""The database file itself: whose it is, who may read it, and whether it is still there.

Part of the database layer: database.py holds the schema and the queries, this module what
concerns the file (it reads the SQLite header and sqlite_master, nothing of the schema).

* **Ours.** Our file carries PRAGMA application_id APPLICATION_ID, set with the first
  migration. A file without it is ours only when it holds nothing but tables our own
  migrations make, up to its user_version (databases written before the id existed).
  Anything else (another program's SQLite file such as lightningd.sqlite3, a file that is
  not SQLite) is refused, and the checks only read: the header by hand, then SQLite with
  mode=ro, before anything could write (a connection's journal_mode=WAL would). A file with
  another program's application_id is never handed to SQLite at all. A zero-length or
  missing file is ours to initialise. A newer schema version than the code knows is refused.
* **Modes.** The file is created 0600 by os.open (it never exists wider), an existing file
  of ours is narrowed to 0600; SQLite gives the -wal and -shm the main file's mode, and any
  left from before are narrowed too. Directories the plugin creates are 0700; existing
  ones are left as they are.
* **Storage faults.** A connection that hit SQLITE_READONLY, SQLITE_FULL, SQLITE_IOERR or
  SQLITE_CANTOPEN remembers it, and its thread replaces it on next use: a connection opened
  while the file was not writable stays read-only for its life, so keeping it would fail
  every later cycle until a restart.
* **Identity.** FileIdentity holds the file open (so its inode number cannot be reused) and
  tells whether the path still names it: os.stat per write transaction. See database.py
  for what the plugin does once the file is gone.
"""
import os
import sqlite3
import stat
import urllib.parse
from typing import Callable, FrozenSet, Iterable, List, Optional, Set

APPLICATION_ID = 0x52764F70   # "RvOp", in the SQLite header at offset 68
SQLITE_MAGIC = b"SQLite format 3\x00"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SIDE_FILES = ("-wal", "-shm")

# Primary result codes (the low byte of the extended code) of faults in the storage below
# SQLite, which can pass: SQLITE_IOERR, SQLITE_READONLY, SQLITE_FULL, SQLITE_CANTOPEN.
STORAGE_FAULT_CODES = {10, 8, 13, 14}
# The same faults by message, for Python < 3.11 whose sqlite3 errors carry no code.
STORAGE_FAULT_TEXTS = ("readonly database", "disk is full", "disk i/o error", "unable to open database")


class DatabaseRefused(Exception):
    """The file at the database path is not one this plugin may run on; it was not written."""


class DatabaseGone(Exception):
    """The database file was deleted or replaced while the plugin ran; writes are refused."""


def file_uri(path: str, mode: str) -> str:
    """An SQLite URI for path (percent-encoded, so '?' or '#' in a name stay part of it)."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"


def is_storage_fault(error: BaseException) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in STORAGE_FAULT_CODES
    text = str(error).lower()
    return any(t in text for t in STORAGE_FAULT_TEXTS)


# --- ownership -------------------------------------------------------------------
def inspect(path: str, known_version: int, tables_at: Callable[[int], Set[str]]) -> int:
    """Decides, only reading, whether the existing file at path is ours to run on.

    tables_at(v): the tables our migrations 1..v create. Returns the file's schema version
    (0 for a file to initialise); raises DatabaseRefused saying why not.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise DatabaseRefused("it is not a regular file")
    if info.st_size == 0:
        return 0
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise DatabaseRefused("it is not an SQLite database")
    header_app_id = int.from_bytes(header[68:72], "big")
    if header_app_id not in (0, APPLICATION_ID):
        raise DatabaseRefused(f"it belongs to another program (SQLite application_id "
                              f"0x{header_app_id:08x}, ours is 0x{APPLICATION_ID:08x})")
    try:   # the header may be older than the WAL: SQLite, read-only, sees the latest
        conn = sqlite3.connect(file_uri(path, "ro"), uri=True, isolation_level=None)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")}
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise DatabaseRefused(f"it cannot be read as an SQLite database ({e})") from e
    if app_id not in (0, APPLICATION_ID):
        raise DatabaseRefused(f"it belongs to another program (SQLite application_id 0x{app_id:08x})")
    if app_id == 0:
        foreign = tables - tables_at(max(known_version, version))
        if foreign:
            raise DatabaseRefused(f"it is another program's database: it holds tables that are not "
                                  f"cl-revenue-ops's ({_names(foreign)})")
        if version == 0 and tables:
            raise DatabaseRefused(f"it holds tables ({_names(tables)}) but no schema version;"
                                  " cl-revenue-ops did not write it")
        missing = tables_at(min(version, known_version)) - tables
        if missing:
            raise DatabaseRefused(f"its schema version {version} lacks tables cl-revenue-ops makes"
                                  f" at that version ({_names(missing)})")
    if version > known_version:
        raise DatabaseRefused(f"its schema version {version} is newer than this cl-revenue-ops"
                              f" knows ({known_version}): a newer release wrote it; run that"
                              " release or point revenue-ops-db-path at another file")
    return version


def _names(tables: Iterable[str], at_most: int = 8) -> str:
    names = sorted(tables)
    more = f" and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more


# --- modes -------------------------------------------------------------------------
def make_private_dirs(directory: str) -> None:
    """Creates the missing directories of the path, each 0700; existing ones are left alone."""
    missing: List[str] = []
    current = os.path.abspath(directory)
    while not os.path.exists(current):
        missing.append(current)
        current = os.path.dirname(current)
    for path in reversed(missing):
        try:
            os.mkdir(path, PRIVATE_DIR_MODE)
        except FileExistsError:   # another process made it meanwhile: not ours to change
            continue
        os.chmod(path, PRIVATE_DIR_MODE)   # exact, whatever the umask


def create_private_file(path: str) -> bool:
    """Creates an empty file with mode 0600 if nothing is there; True if it did."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True


def narrow_modes(path: str) -> List[str]:
    """Narrows the file and its -wal/-shm to 0600; returns those it could not change."""
    failed = []
    for name in (path,) + tuple(path + s for s in SIDE_FILES):
        try:
            if stat.S_IMODE(os.stat(name).st_mode) & ~PRIVATE_FILE_MODE:
                os.chmod(name, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            continue
        except OSError as e:
            failed.append(f"{name}: {e.strerror}")
    return failed


# --- identity ---------------------------------------------------------------------
class FileIdentity:
    """The file the path named when the database was opened.

    Holds a descriptor on it, so while we live its inode number cannot be given to a new
    file and (st_dev, st_ino) identifies it. Close it only after every SQLite connection
    to the file: closing any descriptor drops the process's POSIX locks on the file.
    """

    def __init__(self, path: str):
        self.path = path
        self._fd: Optional[int] = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        info = os.fstat(self._fd)
        self.key = (info.st_dev, info.st_ino)

    def problem(self) -> Optional[str]:
        """None while the path names our file; else what happened to it."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return "was deleted"
        if (info.st_dev, info.st_ino) != self.key:
            return "was replaced by another file"
        return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- connections -------------------------------------------------------------------
class StoreConnection(sqlite3.Connection):
    """A connection that remembers the storage fault it hit, so its thread replaces it."""

    fault: Optional[str] = None
    opened_in_fault = False   # opened while writes were failing: it may be read-only for life
    max_pages_before = 0
    on_fault: Optional[Callable[["StoreConnection", sqlite3.Error], None]] = None
    injected: FrozenSet[str] = frozenset()

    def execute(self, *args):
        try:
            return super().execute(*args)
        except sqlite3.Error as e:
            self._noted(e)
            raise

    def executemany(self, *args):
        try:
            return super().executemany(*args)
        except sqlite3.Error as e:
            self._noted(e)
            raise

    def _noted(self, error: sqlite3.Error) -> None:
        if is_storage_fault(error):
            self.fault = str(error)
            if self.on_fault is not None:
                self.on_fault(self, error)


# --- test-only fault injection ---------------------------------------------------------
FAULTS_ENV = "REVENUE_OPS_TEST_STORAGE_FAULTS"
READONLY, FULL = "readonly", "full"


class StorageFaults:
    """Test-only storage faults, injected where SQLite meets the file.

    Tests run as root here, and root writes through chmod; a read-only remount fails while
    the file is open for writing; a full disk needs a mount. So faults are made inside
    SQLite, with the effect the real ones have on a connection:

    * readonly: connections opened meanwhile open with mode=ro, as SQLite itself opens a
      file it may not write (and they stay read-only for life); connections already open
      turn query_only at their next use. A write fails with SQLITE_READONLY, "attempt to
      write a readonly database".
    * full: each connection's max_page_count is pinned to the file's size at its next use;
      a write that grows the file fails with SQLITE_FULL, "database or disk is full".

    When the fault clears, a connection that never hit it is restored at its next use; one
    that hit it stays broken: the worst case, which only replacing the connection mends.
    The plugin reads the faults from the file named by $REVENUE_OPS_TEST_STORAGE_FAULTS
    (words "readonly", "full"), unit tests call set(). Without either, nothing happens.
    """

    def __init__(self, control_file: Optional[str] = None):
        self.control_file = control_file
        self._active: FrozenSet[str] = frozenset()

    @classmethod
    def from_env(cls) -> Optional["StorageFaults"]:
        path = os.environ.get(FAULTS_ENV)
        return cls(path) if path else None

    def set(self, *kinds: str) -> None:
        self._active = frozenset(kinds)

    def active(self) -> FrozenSet[str]:
        if self.control_file is None:
            return self._active
        try:
            with open(self.control_file) as f:
                return frozenset(f.read().split())
        except FileNotFoundError:
            return frozenset()

    def apply(self, conn: StoreConnection) -> None:
        """Brings the connection in line with the faults now (at each use of it)."""
        active = self.active()
        cleared = conn.injected - active
        if cleared and conn.fault is None:
            if READONLY in cleared:
                conn.execute("PRAGMA query_only = OFF")
            if FULL in cleared:
                conn.execute(f"PRAGMA max_page_count = {int(conn.max_pages_before)}")
            conn.injected = conn.injected - cleared
        new = active - conn.injected
        if READONLY in new:
            conn.execute("PRAGMA query_only = ON")
        if FULL in new:
            conn.max_pages_before = conn.execute("PRAGMA max_page_count").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {int(pages)}")
        conn.injected = conn.injected | new
