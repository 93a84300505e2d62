"""Back-off against password guessing, and limits on requests that send TANs.

Failed password checks are counted per instance and per client address (over all
instances).  After a number of free attempts each further failure doubles the wait,
up to a maximum; while a key is blocked the password is not even checked (no bcrypt
work for the attacker to spend).  A success clears the instance's count and takes off
the address's count only the failures that address made at that instance (counted
per pair): logging in to an instance of one's own does not wipe out failures against
others.  IPv6 clients are counted by
their /64 network, which one host usually controls whole.  The counts live in the
database, so a restart hands out no fresh attempts, and they are forgotten a day
after the last failure.

Checks may run concurrently, but never more at once for an instance or an address
than failures it may still make before a block: a burst of parallel guesses cannot
slip past the "blocked?" test before the first of them is counted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from typing import Awaitable, Callable

from .config import Settings
from .errors import EC, TalerError
from .store import Store, ThrottleState

#: An instance as a whole tolerates this many times the free attempts of an address.
INSTANCE_FACTOR = 4
#: Failures are forgotten this long after the last one.
FORGET_AFTER_S = 86_400.0


def backoff(free: int, base_s: float, max_s: float) -> Callable[[int], float]:
    """Delay in seconds after the n-th consecutive failure."""

    def delay(failures: int) -> float:
        over = failures - free
        if over <= 0:
            return 0.0
        return min(base_s * 2.0 ** min(over - 1, 40), max_s)

    return delay


def _too_many(retry_after: float, code: EC) -> TalerError:
    seconds = max(1, math.ceil(retry_after))
    return TalerError(
        429,
        code,
        "too many failed attempts; try again later",
        headers={"Retry-After": str(seconds)},
    )


def _never(failures: int) -> float:
    return 0.0


def address_key(address: str) -> str:
    """How a client address is counted: IPv6 by its /64 network."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class PasswordThrottle:
    """Per-instance, per-address and per-pair back-off of password checks."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._changed = asyncio.Condition()
        self._in_flight: dict[str, int] = {}
        self.reconfigure(settings)

    def reconfigure(self, settings: Settings) -> None:
        """Apply (re-read) settings; checks under way are not disturbed."""
        base = settings.throttle_base_delay / 1e6
        top = settings.throttle_max_delay / 1e6
        self._free = settings.throttle_free_attempts
        self._address_delay = backoff(self._free, base, top)
        self._instance_delay = backoff(self._free * INSTANCE_FACTOR, base, top)

    def _keys(self, instance_id: str, address: str) -> tuple[str, str, str]:
        counted = address_key(address)
        return (
            f"password/instance/{instance_id}",
            f"password/address/{counted}",
            f"password/pair/{counted}/{instance_id}",
        )

    def _allowance(self, key: str, state: ThrottleState | None) -> int:
        """Checks that may run at once: the failures the key may still make."""
        if key.startswith("password/pair/"):
            return 1 << 30  # pairs are only counted, they never block
        free = self._free
        if key.startswith("password/instance/"):
            free *= INSTANCE_FACTOR
        failures = 0 if state is None else state.failures
        return max(1, free + 1 - failures)

    async def verify(
        self, instance_id: str, address: str, check: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Run one password ``check`` under the back-off and count its outcome.

        Raises 429 without running ``check`` while the instance, the address or the
        pair is blocked.
        """
        keys = self._keys(instance_id, address)
        async with self._changed:
            while True:
                states = await self._blocked_check(keys)
                if all(
                    self._in_flight.get(key, 0) < self._allowance(key, states.get(key))
                    for key in keys
                ):
                    break
                await self._changed.wait()
            for key in keys:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            if await check():
                await self._store.clear_failures(keys[0], keys[2], keys[1])
                return True
            now = time.time()
            await self._store.record_failure(
                keys[0], now, self._instance_delay, FORGET_AFTER_S
            )
            await self._store.record_failure(
                keys[1], now, self._address_delay, FORGET_AFTER_S
            )
            await self._store.record_failure(keys[2], now, _never, FORGET_AFTER_S)
            return False
        finally:
            async with self._changed:
                for key in keys:
                    self._in_flight[key] -= 1
                    if not self._in_flight[key]:
                        del self._in_flight[key]
                self._changed.notify_all()

    async def _blocked_check(self, keys: tuple[str, ...]) -> dict[str, ThrottleState]:
        states = await self._store.get_throttle(keys)
        now = time.time()
        wait = max((s.blocked_until - now for s in states.values()), default=0.0)
        if wait > 0:
            raise _too_many(wait, EC.MERCHANT_GENERIC_UNAUTHORIZED)
        return states


class AttemptLimiter:
    """At most ``limit`` attempts of one kind per key (a client address, a
    challenge) within a fixed window that starts with the first attempt.

    Used for the public requests that make the daemon send TANs to somebody:
    sign-ups, forgot-password and TAN transmissions.  Counting and checking happen
    in one transaction, so a burst of concurrent requests cannot overrun the limit.
    """

    def __init__(
        self, store: Store, kind: str, limit: int, window_s: float = 3600.0
    ) -> None:
        self._store = store
        self._kind = kind
        self.limit = limit
        self._window_s = window_s

    async def attempt(self, key: str) -> None:
        """Count one attempt for ``key``; raise 429 once its quota is used up."""
        now = time.time()
        state = await self._store.count_attempt(
            f"{self._kind}/{key}", now, self._window_s
        )
        if state.failures > self.limit:
            raise _too_many(state.blocked_until - now, EC.MERCHANT_GENERIC_UNAUTHORIZED)
