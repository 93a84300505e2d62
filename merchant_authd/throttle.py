"""Back-off against password guessing and sign-up floods.

Failed password checks are counted per instance and per client address.  After a
number of free attempts each further failure doubles the wait, up to a maximum; while
a key is blocked the password is not even checked (no bcrypt work for the attacker to
spend).  A successful check clears both counters.  The counters live in the database,
so a restart does not hand out a fresh set of attempts.

The checks of one instance run one after the other (:meth:`PasswordThrottle.verify`):
otherwise a burst of concurrent guesses would all pass the "blocked?" test before the
first of them is counted as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import AsyncIterator, Awaitable, Callable

from .config import Settings
from .errors import EC, TalerError
from .store import Store

#: An instance as a whole tolerates this many times the per-address free attempts.
INSTANCE_FACTOR = 4
SIGNUP_WINDOW_S = 3600.0


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


class PasswordThrottle:
    """Per-instance and per-address back-off of password checks."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        base = settings.throttle_base_delay / 1e6
        top = settings.throttle_max_delay / 1e6
        free = settings.throttle_free_attempts
        self._address_delay = backoff(free, base, top)
        self._instance_delay = backoff(free * INSTANCE_FACTOR, base, top)
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    @staticmethod
    def _keys(instance_id: str, address: str) -> tuple[str, str]:
        return f"password/instance/{instance_id}", f"password/address/{address}"

    async def verify(
        self, instance_id: str, address: str, check: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Run one password ``check`` under the back-off and count its outcome.

        Raises 429 without running ``check`` while the instance or address is blocked.
        """
        async with self._serialised(instance_id):
            await self.check(instance_id, address)
            if await check():
                await self.success(instance_id, address)
                return True
            await self.failure(instance_id, address)
            return False

    @contextlib.asynccontextmanager
    async def _serialised(self, instance_id: str) -> AsyncIterator[None]:
        self._waiting[instance_id] = self._waiting.get(instance_id, 0) + 1
        lock = self._locks.setdefault(instance_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._waiting[instance_id] -= 1
            if not self._waiting[instance_id]:
                del self._waiting[instance_id]
                del self._locks[instance_id]

    async def check(self, instance_id: str, address: str) -> None:
        """Raise 429 while either key is blocked."""
        keys = self._keys(instance_id, address)
        states = await self._store.get_throttle(keys)
        now = time.time()
        wait = max((s.blocked_until - now for s in states.values()), default=0.0)
        if wait > 0:
            raise _too_many(wait, EC.MERCHANT_GENERIC_UNAUTHORIZED)

    async def failure(self, instance_id: str, address: str) -> None:
        """Count a failed check against both keys."""
        instance_key, address_key = self._keys(instance_id, address)
        now = time.time()
        await self._store.record_failure(instance_key, now, self._instance_delay)
        await self._store.record_failure(address_key, now, self._address_delay)

    async def success(self, instance_id: str, address: str) -> None:
        """Forget earlier failures of this instance and address."""
        states = await self._store.get_throttle(self._keys(instance_id, address))
        if states:
            await self._store.reset_throttle(list(states))


class AttemptLimiter:
    """At most ``limit`` attempts of one kind per client address per hour of activity.

    Used for the public requests that make the daemon send TANs to somebody:
    sign-ups and forgot-password.
    """

    def __init__(self, store: Store, kind: str, limit: int) -> None:
        self._store = store
        self._kind = kind
        self._limit = limit

    async def attempt(self, address: str) -> None:
        """Count one attempt; raise 429 when the address used up its quota."""
        key = f"{self._kind}/address/{address}"
        now = time.time()
        state = (await self._store.get_throttle([key])).get(key)
        if state is not None and state.blocked_until <= now:
            await self._store.reset_throttle([key])
            state = None
        if state is not None and state.failures >= self._limit:
            raise _too_many(state.blocked_until - now, EC.MERCHANT_GENERIC_UNAUTHORIZED)
        await self._store.record_failure(key, now, lambda _: SIGNUP_WINDOW_S)
