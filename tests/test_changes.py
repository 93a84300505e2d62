"""The watch that tells the read cache whether any connection committed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from merchant_authd.sqlite_store import SqliteStore, changes
from merchant_authd.sqlite_store.changes import WAL_INDEX_HEADER_SIZE, ChangeWatch


def make_database(path: Path, journal_mode: str) -> sqlite3.Connection:
    """A database with one table, and the connection that keeps it open."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (0)")
    return conn


def in_another_process(path: Path, sql: str) -> str:
    """Run ``sql`` on ``path`` from another process; what it printed."""
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0.5)\n"
        "try:\n"
        "    print(c.execute(sys.argv[2]).fetchall())\n"
        "except sqlite3.Error as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "c.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


@pytest.fixture
def wal_database(tmp_path: Path):
    path = tmp_path / "wal.sqlite3"
    conn = make_database(path, "WAL")
    yield path, conn
    conn.close()


@pytest.fixture
def watch(wal_database):
    opened = ChangeWatch.open(wal_database[0])
    yield opened
    opened.close()


def test_a_database_in_wal_mode_is_watched_through_its_wal_index(watch):
    assert watch.reads_wal_index
    assert len(watch.version()) == WAL_INDEX_HEADER_SIZE


def test_reads_leave_the_wal_index_header_as_it_was(wal_database, watch):
    path, conn = wal_database
    before = watch.version()
    for _ in range(3):
        conn.execute("SELECT count(*) FROM t").fetchall()
    assert in_another_process(path, "SELECT count(*) FROM t") == "[(1,)]"
    assert watch.version() == before


def test_every_commit_changes_the_wal_index_header(wal_database, watch):
    path, conn = wal_database
    seen = [watch.version()]
    conn.execute("INSERT INTO t VALUES (2)")  # this process
    seen.append(watch.version())
    in_another_process(path, "INSERT INTO t VALUES (1)")
    seen.append(watch.version())
    in_another_process(path, "UPDATE t SET x = x + 1")
    seen.append(watch.version())
    assert len(set(seen)) == len(seen)


def test_a_reset_of_the_wal_changes_the_header(wal_database, watch):
    _, conn = wal_database
    conn.execute("INSERT INTO t VALUES (2)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    after_checkpoint = watch.version()
    # The WAL starts over: the header's frame count goes back, its salt changes.
    conn.execute("INSERT INTO t VALUES (3)")
    assert watch.version() != after_checkpoint


def test_a_database_not_in_wal_mode_is_watched_by_its_data_version(tmp_path):
    path = tmp_path / "rollback.sqlite3"
    conn = make_database(path, "DELETE")
    watch = ChangeWatch.open(path)
    try:
        assert not watch.reads_wal_index
        before = watch.version()
        assert before is not None and watch.version() == before
        in_another_process(path, "INSERT INTO t VALUES (1)")
        assert watch.version() != before
    finally:
        watch.close()
        conn.close()


@pytest.mark.parametrize(
    "content", [b"", b"\x01" * 8, bytes(32768)], ids=["empty", "short", "zeroes"]
)
def test_a_wal_index_without_a_usable_header_is_not_read(tmp_path, content):
    shm = tmp_path / "db.sqlite3-shm"
    shm.write_bytes(content)
    index = changes._acquire_wal_index(str(tmp_path / "db.sqlite3"))
    assert index is not None
    watch = ChangeWatch(sqlite3.connect(":memory:"), index)
    try:
        assert not watch.reads_wal_index
        assert watch.version() is not None  # the data_version probe answers
    finally:
        watch.close()
    assert changes._OPEN_INDEXES == {}


def test_without_a_wal_index_file_nothing_is_opened(tmp_path):
    assert changes._acquire_wal_index(str(tmp_path / "db.sqlite3")) is None
    assert changes._OPEN_INDEXES == {}


def test_watches_of_one_database_share_its_wal_index(wal_database):
    path, _ = wal_database
    first, second = ChangeWatch.open(path), ChangeWatch.open(path)
    try:
        assert first._wal_index is second._wal_index
        assert first._wal_index is not None and first._wal_index.users == 2
        first.close()
        first.close()  # a second close changes nothing
        assert second._wal_index.users == 1
        assert second.reads_wal_index and second.version() is not None
    finally:
        second.close()
    assert changes._OPEN_INDEXES == {}


def test_the_watch_maps_the_file_sqlite_itself_uses(tmp_path, wal_database):
    path, conn = wal_database
    link = tmp_path / "link.sqlite3"
    os.symlink(path, link)
    watch = ChangeWatch.open(link)
    try:
        assert watch.reads_wal_index
        before = watch.version()
        conn.execute("INSERT INTO t VALUES (2)")
        assert watch.version() != before
    finally:
        watch.close()


def test_the_probe_cannot_tell_once_its_connection_fails(tmp_path):
    probe = sqlite3.connect(str(tmp_path / "db.sqlite3"))
    watch = ChangeWatch(probe)
    assert watch.version() is not None
    probe.close()
    assert watch.version() is None


#: SQLite's "dead man switch" byte of the -shm file: every process with a connection
#: holds a shared lock on it, and the first one to open the database takes it
#: exclusively and starts the WAL index afresh.
_DMS_BYTE = 128
_TRY_DMS_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]), os.SEEK_SET)
    print("free")
except OSError:
    print("in use")
"""


def dms_state(shm: Path) -> str:
    """Whether another process could take the -shm file over."""
    command = [sys.executable, "-c", _TRY_DMS_LOCK, str(shm), str(_DMS_BYTE)]
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


async def test_the_watch_keeps_the_stores_claim_on_the_wal_index(tmp_path):
    """Closing any descriptor of the -shm file would drop the locks this process's
    connections hold on it; the watches' descriptors must not cost them theirs,
    neither when a store opens nor when another store of the database closes."""
    path = tmp_path / "store.sqlite3"
    shm = tmp_path / "store.sqlite3-shm"
    store = await SqliteStore.open(path)
    try:
        assert store._cache._watch.reads_wal_index
        assert dms_state(shm) == "in use"
        other = await SqliteStore.open(path)  # a command next to the daemon, say
        await other.close()
        await store.get_instance("admin")
        assert dms_state(shm) == "in use"
    finally:
        await store.close()
    assert changes._OPEN_INDEXES == {}
