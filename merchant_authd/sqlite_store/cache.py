"""Hot reads kept in memory for exactly as long as the database is unchanged."""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

from ..store import AccessToken, Instance
from .changes import ChangeWatch


class ReadCache:
    """Instances and access tokens as last read, valid until anybody commits.

    Before each use the cache asks its :class:`~.changes.ChangeWatch` whether any
    connection, in this process or another (an admin command, say), committed since
    the last look, and empties itself if one did.  A cached answer is thus what the
    database would answer: revoking a token takes effect on the next request,
    whoever revoked it.

    Every emptying starts a new generation.  A row read from the database may only
    be kept in the generation that was current when the read began: if the cache
    was emptied meanwhile, the row may predate the commit that emptied it.
    """

    #: Tokens (and instances) kept at most; beyond, the oldest entry makes room.
    #: About 0.6 KiB each: the full cache costs some 30 MiB.
    MAX_ENTRIES = 50_000

    def __init__(self, watch: ChangeWatch) -> None:
        self._watch = watch
        self._version: Hashable | None = None
        self._generation = 0
        # Ordered by insertion: the oldest entry goes first, in constant time (a plain
        # dict slows down when its first entries are deleted over and over).
        self.instances: OrderedDict[str, Instance] = OrderedDict()
        self.tokens: OrderedDict[bytes, tuple[Instance, AccessToken]] = OrderedDict()

    def generation(self) -> int | None:
        """Empty the cache if the database changed; the generation now current, or
        ``None`` if the cache may not be used (the watch cannot tell)."""
        version = self._watch.version()
        if version is None or version != self._version:
            self.instances.clear()
            self.tokens.clear()
            self._version = version
            self._generation += 1
        return self._generation if version is not None else None

    def remember_instance(self, instance: Instance, generation: int) -> None:
        """Keep ``instance``, read in ``generation``; when full, forget the one kept
        longest."""
        if generation == self._generation:
            self._keep_instance(instance)

    def remember_token(
        self, digest: bytes, found: tuple[Instance, AccessToken], generation: int
    ) -> None:
        """Keep a token with its instance, read in ``generation``; tokens of one
        instance share one record."""
        if generation != self._generation:
            return
        instance, token = found
        known = self.instances.get(instance.id)
        if known is not None and known == instance:
            found = known, token
        else:
            self._keep_instance(instance)
        if len(self.tokens) >= self.MAX_ENTRIES:
            self.tokens.popitem(last=False)
        self.tokens[digest] = found

    def _keep_instance(self, instance: Instance) -> None:
        if len(self.instances) >= self.MAX_ENTRIES:
            self.instances.popitem(last=False)
        self.instances[instance.id] = instance

    def close(self) -> None:
        """Release the watch."""
        self._watch.close()
