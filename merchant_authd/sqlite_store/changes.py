"""Noticing that some connection, in this process or another, committed a change.

The read cache (:mod:`.cache`) answers from memory only while nothing was committed
since it was filled, and it asks on every authenticated request, so the question has
to be cheap.  Two ways to ask are here:

* :class:`WalIndexWatch` reads the header of the WAL index, the ``-shm`` file that
  every connection to a database in WAL mode maps into memory.  SQLite rewrites that
  header as the last step of every commit (and of every reset of the WAL), so the
  header differs from one commit to the next.  Its layout is part of SQLite's
  documented file format (https://sqlite.org/walformat.html, "The WAL-Index
  Header"): two copies of a 48-byte header, in the byte order of the machine, the
  first copy written last.  Reading it is a copy of 48 bytes of shared memory: no
  system call, no file lock, and the interpreter lock is kept.
* :class:`DataVersionWatch` runs ``PRAGMA data_version`` on a connection of its
  own.  It works in every journal mode, but each look opens a read transaction: file
  locks, system calls, and the interpreter lock given up and taken back, which under
  load costs as much as the rest of an authenticated read.

:func:`open_watch` takes the first where the database is in WAL mode, which the store
sets when it connects.  A database cannot leave WAL mode while another connection
(this daemon's) has it open, and SQLite never removes or truncates the ``-shm`` file
while a connection uses it, so the mapping stays the live one for as long as the
store is open.  Deleting or truncating the ``-shm`` file of a database in use is a
way to corrupt it, for SQLite as for this watch.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
from pathlib import Path
from typing import Hashable, Protocol

#: Size of one copy of the WAL-index header.
WAL_INDEX_HEADER_SIZE = 48
#: ``iVersion`` of every WAL index SQLite 3.7.0 and later writes.
WAL_INDEX_VERSION = 3007000
#: iVersion, padding, iChange (counts transactions), isInit (1 once initialised).
_HEADER_START = struct.Struct("=IIIB")


class ChangeWatch(Protocol):
    """Something that tells whether the database changed since the last look."""

    def version(self) -> Hashable | None:
        """A value that differs after any commit; ``None`` when it cannot be known."""

    def close(self) -> None:
        """Release what the watch holds."""


class WalIndexWatch:
    """The WAL-index header of a database in WAL mode, read from a shared mapping."""

    def __init__(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping

    @classmethod
    def open(cls, database_file: str) -> "WalIndexWatch | None":
        """Map the header of ``database_file``'s WAL index, if it has a usable one.

        ``database_file`` is the name SQLite itself uses (``PRAGMA database_list``),
        to which it appends ``-shm``.
        """
        try:
            fd = os.open(database_file + "-shm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < WAL_INDEX_HEADER_SIZE:
                return None
            mapping = mmap.mmap(
                fd, WAL_INDEX_HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ
            )
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        version, _, _, initialised = _HEADER_START.unpack_from(mapping)
        if version != WAL_INDEX_VERSION or initialised != 1:
            mapping.close()
            return None
        return cls(mapping)

    def version(self) -> bytes:
        """The first copy of the header, as it is now.

        A copy read while a commit rewrites it may mix old and new bytes; it then
        differs from the old header (the cache is emptied once more than needed) or
        equals it (the commit is not visible to readers yet either).
        """
        return self._mapping[:WAL_INDEX_HEADER_SIZE]

    def close(self) -> None:
        """Unmap the header."""
        self._mapping.close()


class DataVersionWatch:
    """``PRAGMA data_version`` on a connection used for nothing else."""

    def __init__(self, probe: sqlite3.Connection) -> None:
        self._probe = probe

    def version(self) -> int | None:
        """The connection's data version; it changes when another one commits."""
        try:
            return int(self._probe.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def close(self) -> None:
        """Close the probe connection."""
        self._probe.close()


def open_watch(path: Path) -> ChangeWatch:
    """The cheapest watch that works for the database at ``path`` (blocking)."""
    probe = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        (mode,) = probe.execute("PRAGMA journal_mode").fetchone()
        # The file name as SQLite resolved it, which is what its -shm name extends.
        database_file = probe.execute("PRAGMA database_list").fetchone()[2]
    except BaseException:
        probe.close()
        raise
    if str(mode).lower() == "wal" and database_file:
        watch = WalIndexWatch.open(database_file)
        if watch is not None:
            probe.close()
            return watch
    return DataVersionWatch(probe)
