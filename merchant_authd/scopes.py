"""Access-token scopes and the permissions they grant.

A scope is what a client asks for when it logs in; a permission is what an endpoint
needs.  ``*`` grants every permission and ``*-read`` every permission ending in
``-read``.  ``token-refresh`` is special: only a refreshable token carries it, whatever
its scope, so that an ``all`` token cannot mint new tokens unless it was issued as
refreshable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

REFRESH_SUFFIX = ":refreshable"
TOKEN_REFRESH = "token-refresh"

#: Scope name -> permission patterns it grants.
SCOPES: dict[str, frozenset[str]] = {
    "readonly": frozenset({"*-read"}),
    "all": frozenset({"*"}),
    "order-simple": frozenset({"orders-read", "orders-write"}),
    "order-pos": frozenset({"orders-read", "orders-write", "inventory-lock"}),
    "order-mgmt": frozenset({"orders-read", "orders-write", "orders-refund"}),
    "order-full": frozenset(
        {"orders-read", "orders-write", "inventory-lock", "orders-refund"}
    ),
}

#: Names accepted for compatibility, mapped to (scope, implied refreshable).
ALIASES: dict[str, tuple[str, bool]] = {
    "admin": ("all", False),
    "write": ("all", False),
    "spa": ("all", True),
}


@dataclass(frozen=True)
class Grant:
    """What a credential may do: its permission patterns and refreshability."""

    patterns: frozenset[str]
    refreshable: bool = False

    def allows(self, permission: str | None) -> bool:
        """Whether this grant covers ``permission`` (``None``: any credential)."""
        if permission is None:
            return True
        if permission == TOKEN_REFRESH:
            return self.refreshable
        return self._covers(permission)

    def includes(self, other: "Grant") -> bool:
        """Whether everything ``other`` allows is allowed by this grant."""
        if other.refreshable and not self.refreshable:
            return False
        return all(self._covers(theirs) for theirs in other.patterns)

    def _covers(self, permission: str) -> bool:
        """Whether one of the patterns covers ``permission`` (or a pattern named
        so); set lookups, not a loop: this runs for every authenticated request."""
        patterns = self.patterns
        return (
            "*" in patterns
            or permission in patterns
            or ("*-read" in patterns and permission.endswith("-read"))
        )


#: The grant of an instance password, a bootstrap secret or an external instance.
FULL = Grant(frozenset({"*"}), refreshable=True)


def parse_scope(text: str, refreshable_flag: bool = False) -> tuple[str, bool]:
    """Split a requested scope into (base scope, refreshable).

    Raises ``ValueError`` for an unknown scope.
    """
    name = text
    refreshable = refreshable_flag
    if name.endswith(REFRESH_SUFFIX):
        name = name[: -len(REFRESH_SUFFIX)]
        refreshable = True
    if name in ALIASES:
        name, implied = ALIASES[name]
        refreshable = refreshable or implied
    if name not in SCOPES:
        raise ValueError(f"unknown scope {text!r}")
    return name, refreshable


@functools.lru_cache(maxsize=64)
def grant_for(scope: str, refreshable: bool) -> Grant:
    """The grant of a stored token scope."""
    return Grant(SCOPES.get(scope, frozenset()), refreshable)
