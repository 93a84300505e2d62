"""Noticing that some connection, in this process or another, committed a change.

The read cache (:mod:`.cache`) answers from memory only while nothing was committed
since it was filled, and it asks on every authenticated request, so the question has
to be cheap.  :class:`ChangeWatch` answers it one of two ways:

* From the header of the WAL index, the ``-shm`` file that every connection to a
  database in WAL mode maps into memory.  SQLite rewrites that header as the last
  step of every commit (and of every reset of the WAL), so it differs from one
  commit to the next.  Its layout is part of SQLite's documented file format
  (https://sqlite.org/walformat.html, "The WAL-Index Header"): two copies of a
  48-byte header in the byte order of the machine, the first copy written last.
  Reading it is a copy of 48 bytes of shared memory: no system call, no file lock,
  and the interpreter lock is kept.
* Otherwise with ``PRAGMA data_version`` on a connection of its own.  That works in
  every journal mode, but each look opens a read transaction: file locks, system
  calls, and the interpreter lock given up and taken back, which under load costs
  as much as the rest of an authenticated read.

The store sets WAL mode when it connects, and a database cannot leave WAL mode while
another connection (this daemon's) has it open.  SQLite neither removes nor
truncates the ``-shm`` file while a connection uses it, so the mapping stays the live
one for as long as the store is open.

One rule keeps that true.  POSIX record locks belong to the process and the file: a
process that closes *any* descriptor of a file loses every lock it holds on it,
including the ones SQLite's connections hold on the ``-shm`` file to say it is in
use.  So a ``-shm`` file is opened once per process, shared by every watch of the
database (two stores of one database in one process, as when a command runs next
to the web app in the tests), and closed only when the last of them closes, after
its store's connections: also when the header turns out to be unusable.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

#: Size of one copy of the WAL-index header.
WAL_INDEX_HEADER_SIZE = 48
#: ``iVersion`` of every WAL index SQLite 3.7.0 and later writes.
WAL_INDEX_VERSION = 3007000
#: iVersion, padding, iChange (counts transactions), isInit (1 once initialised).
_HEADER_START = struct.Struct("=IIIB")


@dataclass
class _WalIndex:
    """A ``-shm`` file as this process holds it open: name, descriptor, header
    mapping (``None`` if the file is too short to hold one) and how many watches
    use it."""

    name: str
    fd: int
    mapping: mmap.mmap | None
    users: int = 0


#: The ``-shm`` files this process holds open, by name; see the module documentation.
_OPEN_INDEXES: dict[str, _WalIndex] = {}
_OPEN_INDEXES_LOCK = threading.Lock()


def _acquire_wal_index(database_file: str) -> _WalIndex | None:
    """The shared ``-shm`` file of ``database_file``, opened if need be."""
    name = database_file + "-shm"
    with _OPEN_INDEXES_LOCK:
        index = _OPEN_INDEXES.get(name)
        if index is None:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            index = _OPEN_INDEXES[name] = _WalIndex(name, fd, _map_header(fd))
        index.users += 1
        return index


def _release_wal_index(index: _WalIndex) -> None:
    """One user fewer; the last one closes the file."""
    with _OPEN_INDEXES_LOCK:
        index.users -= 1
        if index.users > 0:
            return
        del _OPEN_INDEXES[index.name]
        if index.mapping is not None:
            index.mapping.close()
        os.close(index.fd)


def _map_header(fd: int) -> mmap.mmap | None:
    try:
        # Reading a mapping beyond the end of its file would kill the process.
        if os.fstat(fd).st_size < WAL_INDEX_HEADER_SIZE:
            return None
        return mmap.mmap(fd, WAL_INDEX_HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError):
        return None


def _usable(mapping: mmap.mmap) -> bool:
    version, _, _, initialised = _HEADER_START.unpack_from(mapping)
    return bool(version == WAL_INDEX_VERSION and initialised == 1)


class ChangeWatch:
    """Tells, by a value that changes with every commit, whether the database
    changed since the last look."""

    def __init__(
        self, probe: sqlite3.Connection, wal_index: _WalIndex | None = None
    ) -> None:
        self._probe = probe
        self._wal_index = wal_index
        mapping = wal_index.mapping if wal_index is not None else None
        self._header = mapping if mapping is not None and _usable(mapping) else None

    @classmethod
    def open(cls, path: Path) -> "ChangeWatch":
        """A watch of the database at ``path``, through its WAL index if it has a
        usable one (blocking).  The store's connections must be open already."""
        probe = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False
        )
        try:
            (mode,) = probe.execute("PRAGMA journal_mode").fetchone()
            # The name SQLite resolved the file to, which its -shm name extends.
            database_file = probe.execute("PRAGMA database_list").fetchone()[2]
        except BaseException:
            probe.close()
            raise
        if str(mode).lower() != "wal" or not database_file:
            return cls(probe)
        return cls(probe, _acquire_wal_index(database_file))

    @property
    def reads_wal_index(self) -> bool:
        """Whether commits are seen in the WAL-index header (else by a query)."""
        return self._header is not None

    def version(self) -> Hashable | None:
        """A value that differs after any commit; ``None`` when it cannot be known.

        A header read while a commit rewrites it may mix old and new bytes: it then
        differs from the old one (the cache is emptied once more than needed) or
        equals it (the commit is not visible to readers yet either).
        """
        if self._header is not None:
            return self._header[:WAL_INDEX_HEADER_SIZE]
        try:
            return int(self._probe.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def close(self) -> None:
        """Release the probe and the WAL index; call after the store's connections
        are closed (see the module documentation).  Closing twice does nothing."""
        self._header = None
        self._probe.close()
        index, self._wal_index = self._wal_index, None
        if index is not None:
            _release_wal_index(index)
