"""The watches that tell the read cache whether any connection committed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from merchant_authd.sqlite_store.changes import (
    WAL_INDEX_HEADER_SIZE,
    DataVersionWatch,
    WalIndexWatch,
    open_watch,
)


def make_database(path: Path, journal_mode: str) -> sqlite3.Connection:
    """A database with one table, and the connection that keeps it open."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (0)")
    return conn


def commit_elsewhere(path: Path, sql: str = "INSERT INTO t VALUES (1)") -> None:
    """Commit ``sql`` from another process."""
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)\n"
        "c.execute(sys.argv[2])\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path), sql], check=True)


@pytest.fixture
def wal_database(tmp_path: Path):
    path = tmp_path / "wal.sqlite3"
    conn = make_database(path, "WAL")
    yield path, conn
    conn.close()


def test_a_database_in_wal_mode_is_watched_through_its_wal_index(wal_database):
    path, _ = wal_database
    watch = open_watch(path)
    try:
        assert isinstance(watch, WalIndexWatch)
    finally:
        watch.close()


def test_reads_leave_the_wal_index_header_as_it_was(wal_database):
    path, conn = wal_database
    watch = open_watch(path)
    try:
        before = watch.version()
        assert len(before) == WAL_INDEX_HEADER_SIZE
        for _ in range(3):
            conn.execute("SELECT count(*) FROM t").fetchall()
        reader = sqlite3.connect(str(path))
        reader.execute("SELECT count(*) FROM t").fetchall()
        reader.close()
        assert watch.version() == before
    finally:
        watch.close()


def test_every_commit_changes_the_wal_index_header(wal_database):
    path, conn = wal_database
    watch = open_watch(path)
    try:
        seen = [watch.version()]
        conn.execute("INSERT INTO t VALUES (2)")  # this process
        seen.append(watch.version())
        commit_elsewhere(path)  # another process
        seen.append(watch.version())
        commit_elsewhere(path, "UPDATE t SET x = x + 1")
        seen.append(watch.version())
        assert len(set(seen)) == len(seen)
    finally:
        watch.close()


def test_a_reset_of_the_wal_changes_the_header(wal_database):
    path, conn = wal_database
    watch = open_watch(path)
    try:
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after_checkpoint = watch.version()
        # The WAL starts over: the header's frame count goes back, its salt changes.
        conn.execute("INSERT INTO t VALUES (3)")
        assert watch.version() != after_checkpoint
    finally:
        watch.close()


def test_a_database_not_in_wal_mode_is_watched_by_its_data_version(tmp_path):
    path = tmp_path / "rollback.sqlite3"
    conn = make_database(path, "DELETE")
    watch = open_watch(path)
    try:
        assert isinstance(watch, DataVersionWatch)
        before = watch.version()
        assert before is not None and watch.version() == before
        commit_elsewhere(path)
        assert watch.version() != before
    finally:
        watch.close()
        conn.close()


def test_an_uninitialised_or_missing_wal_index_is_not_used(tmp_path):
    path = tmp_path / "db.sqlite3"
    assert WalIndexWatch.open(str(path)) is None  # no -shm file at all
    shm = tmp_path / "db.sqlite3-shm"
    shm.write_bytes(b"")
    assert WalIndexWatch.open(str(path)) is None  # too short to hold a header
    shm.write_bytes(bytes(32768))
    assert WalIndexWatch.open(str(path)) is None  # not initialised


def test_the_watch_maps_the_file_sqlite_itself_uses(tmp_path, wal_database):
    path, conn = wal_database
    link = tmp_path / "link.sqlite3"
    os.symlink(path, link)
    watch = open_watch(link)
    try:
        assert isinstance(watch, WalIndexWatch)
        before = watch.version()
        conn.execute("INSERT INTO t VALUES (2)")
        assert watch.version() != before
    finally:
        watch.close()


def test_data_version_watch_cannot_tell_once_its_connection_fails(tmp_path):
    probe = sqlite3.connect(str(tmp_path / "db.sqlite3"))
    watch = DataVersionWatch(probe)
    assert watch.version() is not None
    probe.close()
    assert watch.version() is None
