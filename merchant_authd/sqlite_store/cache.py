"""Hot reads kept in memory for exactly as long as the database is unchanged."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict

from ..store import AccessToken, Instance


class ReadCache:
    """Instances and access tokens as last read, valid until anybody commits.

    ``PRAGMA data_version`` on a connection of its own changes whenever any other
    connection commits, in this process or another (an admin command, say); the
    cache is emptied then.  Asking costs microseconds and reads only shared memory
    (the database is in WAL mode), so it is done on the event loop.  A cached answer
    is thus exactly what the database would answer: revoking a token takes effect on
    the next request, whoever revoked it.
    """

    #: Tokens (and instances) kept at most; beyond, the oldest entry makes room.
    #: About 0.6 KiB each: the full cache costs some 30 MiB.
    MAX_ENTRIES = 50_000

    def __init__(self, probe: sqlite3.Connection) -> None:
        self._probe = probe
        self._version: int | None = None
        # Ordered by insertion: the oldest entry goes first, in constant time (a plain
        # dict slows down when its first entries are deleted over and over).
        self.instances: OrderedDict[str, Instance] = OrderedDict()
        self.tokens: OrderedDict[bytes, tuple[Instance, AccessToken]] = OrderedDict()

    def current(self) -> bool:
        """Empty the cache if the database changed; whether it may be used."""
        try:
            version = self._probe.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            version = None
        if version is None or version != self._version:
            self.instances.clear()
            self.tokens.clear()
            self._version = version
        return version is not None

    def remember_instance(self, instance: Instance) -> None:
        """Keep ``instance``; when full, forget the one kept longest."""
        if len(self.instances) >= self.MAX_ENTRIES:
            self.instances.popitem(last=False)
        self.instances[instance.id] = instance

    def remember_token(
        self, digest: bytes, found: tuple[Instance, AccessToken]
    ) -> None:
        """Keep a token with its instance; tokens of one instance share one record."""
        instance, token = found
        known = self.instances.get(instance.id)
        if known is not None and known == instance:
            found = known, token
        else:
            self.remember_instance(instance)
        if len(self.tokens) >= self.MAX_ENTRIES:
            self.tokens.popitem(last=False)
        self.tokens[digest] = found

    def close(self) -> None:
        self._probe.close()
