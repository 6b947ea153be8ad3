"""The database file: whose it is, its modes, storage faults and recovery, deletion."""
import os
import sqlite3
import stat
import threading

import pytest

from modules.database import MIGRATIONS, Database, DatabaseGone, DatabaseRefused
from modules.db_file import APPLICATION_ID, StorageFaults
from test_database import make_forward

KNOWN = len(MIGRATIONS)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def lightningd_like(path):
    """A file shaped like lightningd.sqlite3: its own tables, no user_version, rollback journal."""
    conn = sqlite3.connect(path)
    for table in ("version", "vars", "peers", "channels", "outputs", "shachains", "forwards"):
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("INSERT INTO version VALUES (1, 250)")
    conn.commit()
    conn.close()


def legacy_database(path, version=3, mode=0o644):
    """A database as the code before application_id wrote it: migrations only, mode 0644."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for number, statements in enumerate(MIGRATIONS[:version], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO marks VALUES ('created', 42)")
    conn.close()
    os.chmod(path, mode)


def in_thread(fn):
    """Runs fn on a new thread (a new connection, as an RPC thread has); returns or raises its outcome."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as e:
            outcome["error"] = e
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def forwards(first, n, channel="A"):
    return [make_forward(channel, first + i, "B", 1_000_000, 100, 1_700_000_000 + first + i)
            for i in range(n)]


# --- whose file ------------------------------------------------------------------
def test_a_new_database_is_marked_ours_and_private(tmp_path):
    path = tmp_path / "made" / "by" / "plugin" / "revenue_ops.db"
    db = Database(str(path))
    assert db.migrate() == KNOWN
    assert db._conn().execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.store_forwards(forwards(0, 5))
    for name in (path, str(path) + "-wal", str(path) + "-shm"):
        assert mode_of(name) == 0o600, name
    for directory in (tmp_path / "made", tmp_path / "made" / "by", path.parent):
        assert mode_of(directory) == 0o700, directory
    db.close()


def test_an_existing_directory_keeps_its_mode(tmp_path):
    os.chmod(tmp_path, 0o755)
    db = Database(str(tmp_path / "revenue_ops.db"))
    db.migrate()
    assert mode_of(tmp_path) == 0o755
    db.close()


def test_a_newer_schema_version_is_refused_and_left_untouched(tmp_path):
    path = str(tmp_path / "revenue_ops.db")
    db = Database(path)
    db.migrate()
    db._conn().execute(f"PRAGMA user_version = {KNOWN + 5}")
    db.close()
    before = file_bytes(path)
    with pytest.raises(DatabaseRefused, match=rf"schema version {KNOWN + 5} is newer than this "
                                              rf"cl-revenue-ops knows \({KNOWN}\)"):
        Database(path).migrate()
    assert file_bytes(path) == before


def test_another_programs_sqlite_file_is_refused_byte_for_byte_unchanged(tmp_path):
    path = str(tmp_path / "lightningd.sqlite3")
    lightningd_like(path)
    before = file_bytes(path)
    db = Database(path)
    with pytest.raises(DatabaseRefused, match="another program's database: it holds tables that are not "
                                              r"cl-revenue-ops's \(channels, outputs, peers, shachains, "
                                              r"vars, version\)"):
        db.migrate()
    with pytest.raises(DatabaseRefused):   # nor does any other use open it
        db.forwards_count()
    assert file_bytes(path) == before
    assert sorted(os.listdir(tmp_path)) == ["lightningd.sqlite3"]   # no -wal, no -shm


def test_a_file_with_another_application_id_is_refused_unread(tmp_path):
    path = str(tmp_path / "other.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE forwards (x)")    # even with a table of our name
    conn.commit()
    conn.close()
    before = file_bytes(path)
    with pytest.raises(DatabaseRefused, match="another program .SQLite application_id 0x000004d2"):
        Database(path).migrate()
    assert file_bytes(path) == before


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path):
    path = str(tmp_path / "revenue_ops.db")
    with open(path, "wb") as f:
        f.write(b"not a database at all\n" * 20)
    before = file_bytes(path)
    with pytest.raises(DatabaseRefused, match="not an SQLite database"):
        Database(path).migrate()
    assert file_bytes(path) == before


def test_our_tables_plus_a_foreign_one_is_refused(tmp_path):
    path = str(tmp_path / "revenue_ops.db")
    legacy_database(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseRefused, match=r"not cl-revenue-ops's \(invoices\)"):
        Database(path).migrate()


def test_a_database_from_before_the_application_id_is_adopted_and_upgraded(tmp_path):
    path = str(tmp_path / "revenue_ops.db")
    legacy_database(path, version=2)
    db = Database(path)
    assert db.migrate() == KNOWN
    conn = db._conn()
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.get_mark("created") == 42              # what it held is kept
    assert conn.execute("SELECT COUNT(*) FROM budget_ledger").fetchone()[0] == 0   # migration 3 ran
    for name in (path, path + "-wal", path + "-shm"):
        assert mode_of(name) == 0o600, name          # narrowed from 0644
    db.close()


def test_a_current_database_without_the_id_is_adopted(tmp_path):
    path = str(tmp_path / "revenue_ops.db")
    legacy_database(path, version=KNOWN)
    db = Database(path)
    assert db.migrate() == KNOWN
    assert db._conn().execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()


def test_an_empty_file_is_ours_to_initialise(tmp_path):
    path = tmp_path / "revenue_ops.db"
    path.touch(mode=0o644)
    db = Database(str(path))
    assert db.migrate() == KNOWN
    assert mode_of(path) == 0o600
    db.close()


# --- storage faults ---------------------------------------------------------------
def test_a_read_only_spell_ends_without_reopening_the_database(tmp_path):
    logs = []
    faults = StorageFaults()
    db = Database(str(tmp_path / "revenue_ops.db"), log=lambda m, level: logs.append((level, m)),
                  faults=faults)
    db.migrate()
    db.store_forwards(forwards(0, 10))
    faults.set("readonly")
    for _ in range(3):   # the thread's own connection, then the one it opens instead
        with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
            db.store_forwards(forwards(10, 10))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):   # a new thread's connection too
        in_thread(lambda: db.store_forwards(forwards(10, 10)))
    assert "readonly" in db.problem()
    assert db.forwards_count() == 10                 # reads go on
    assert sum("storage fault" in m for _, m in logs) == 1
    faults.set()                                     # writable again
    assert db.store_forwards(forwards(10, 10)) == 10
    assert in_thread(lambda: db.store_forwards(forwards(20, 10))) == 10
    assert db.forwards_count() == 30 and db.problem() is None
    assert ("info", "Database: writes succeed again") in logs
    db.close()


def test_a_full_disk_spell_ends_without_reopening_the_database(tmp_path):
    faults = StorageFaults()
    db = Database(str(tmp_path / "revenue_ops.db"), faults=faults)
    db.migrate()
    db.store_forwards(forwards(0, 10))
    faults.set("full")
    for _ in range(2):
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            db.store_forwards(forwards(10, 2000), {"created": 2010})
    assert db.forwards_count() == 10 and db.get_mark("created") is None   # all or nothing
    assert "disk is full" in db.problem()
    faults.set()                                     # room again
    assert db.store_forwards(forwards(10, 2000), {"created": 2010}) == 2000
    assert db.get_flow_aggregation(0)["B"].out_count == 2010
    assert db.problem() is None
    db.close()


# --- deleted or replaced ------------------------------------------------------------
def test_a_deleted_file_refuses_writes_and_is_never_created_again(tmp_path):
    logs = []
    path = str(tmp_path / "revenue_ops.db")
    db = Database(path, log=lambda m, level: logs.append(m))
    db.migrate()
    db.store_forwards(forwards(0, 10))
    for name in (path, path + "-wal", path + "-shm"):
        os.remove(name)
    for _ in range(2):
        with pytest.raises(DatabaseGone, match=f"{path} was deleted while cl-revenue-ops ran"):
            db.store_forwards(forwards(10, 1))
    with pytest.raises(DatabaseGone):    # an RPC thread neither reads nor creates a new file
        in_thread(db.forwards_count)
    with pytest.raises(DatabaseGone):    # nor does a thread that had a connection
        db.get_mark("created")
    with pytest.raises(DatabaseGone):
        in_thread(lambda: db.store_forwards(forwards(10, 1)))
    assert not os.path.exists(path)
    assert "was deleted" in db.problem()
    assert sum("was deleted" in m for m in logs) == 1
    db.close()
    assert not os.path.exists(path)


def test_a_moved_file_takes_every_committed_write_with_it(tmp_path):
    path = str(tmp_path / "revenue_ops.db")
    db = Database(path)
    db.migrate()
    db.store_forwards(forwards(0, 500), {"created": 500})   # in the -wal, not yet in the file
    moved = str(tmp_path / "elsewhere.db")
    os.rename(path, moved)
    with pytest.raises(DatabaseGone, match="was deleted"):
        db.store_forwards(forwards(500, 1))
    with pytest.raises(DatabaseGone):                # reads stop too: one file, or none
        db.forwards_count()
    db.close()
    assert not os.path.exists(path)
    with sqlite3.connect(f"file:{moved}?immutable=1", uri=True) as conn:   # the file alone, no -wal
        assert conn.execute("SELECT COUNT(*) FROM forwards").fetchone()[0] == 500


def test_a_replaced_file_is_detected_and_left_as_it_is(tmp_path):
    path = str(tmp_path / "revenue_ops.db")
    db = Database(path)
    db.migrate()
    db.store_forwards(forwards(0, 300))
    backup = Database(str(tmp_path / "backup.db"))
    backup.migrate()
    backup.store_forwards(forwards(0, 7, channel="Z"))
    backup.close()
    os.replace(str(tmp_path / "backup.db"), path)    # e.g. a backup restored over it
    before = file_bytes(path)
    with pytest.raises(DatabaseGone, match="was replaced by another file"):
        db.store_forwards(forwards(300, 1))
    with pytest.raises(DatabaseGone):
        in_thread(lambda: db.set_mark("created", 1))
    assert "replaced" in db.problem()
    db.close()
    assert file_bytes(path) == before
    # Our -wal was left at the path; emptied, nothing of ours is replayed into the backup.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT in_channel, COUNT(*) FROM forwards GROUP BY 1").fetchall() == [("Z", 7)]
