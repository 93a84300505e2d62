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
use.  So the descriptors opened here stay open until the store's connections are
closed, and are closed only then, even when the header turns out to be unusable.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
from pathlib import Path
from typing import Hashable

#: Size of one copy of the WAL-index header.
WAL_INDEX_HEADER_SIZE = 48
#: ``iVersion`` of every WAL index SQLite 3.7.0 and later writes.
WAL_INDEX_VERSION = 3007000
#: iVersion, padding, iChange (counts transactions), isInit (1 once initialised).
_HEADER_START = struct.Struct("=IIIB")


class ChangeWatch:
    """Tells, by a value that changes with every commit, whether the database
    changed since the last look."""

    def __init__(
        self,
        probe: sqlite3.Connection,
        shm_fd: int | None = None,
        mapping: mmap.mmap | None = None,
    ) -> None:
        self._probe = probe
        self._shm_fd = shm_fd
        self._mapping = mapping
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
        return cls(probe, *_map_wal_index(database_file))

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
        """Release the probe, then the mapping; call after the store's connections
        are closed (see the module's documentation)."""
        self._probe.close()
        if self._mapping is not None:
            self._mapping.close()
        if self._shm_fd is not None:
            os.close(self._shm_fd)


def _map_wal_index(database_file: str) -> tuple[int | None, mmap.mmap | None]:
    """A descriptor of the ``-shm`` file and a read-only mapping of its header.

    Nothing opened here is closed here: closing a descriptor of the file would drop
    the locks this process's connections hold on it.
    """
    try:
        fd = os.open(database_file + "-shm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None, None
    try:
        # Reading a mapping beyond the end of its file would kill the process.
        if os.fstat(fd).st_size < WAL_INDEX_HEADER_SIZE:
            return fd, None
        return fd, mmap.mmap(fd, WAL_INDEX_HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError):
        return fd, None


def _usable(mapping: mmap.mmap) -> bool:
    version, _, _, initialised = _HEADER_START.unpack_from(mapping)
    return bool(version == WAL_INDEX_VERSION and initialised == 1)
