"""The storage interface: records and the domain operations handlers rely on.

Handlers and services talk only to :class:`Store`.  The SQLite implementation lives in
:mod:`merchant_authd.sqlite_store`; a backend for several processes (PostgreSQL)
would implement the same methods.  Every method that changes more than one row does
so atomically.  The password throttle's and TAN sender's in-flight bounds are kept
per process; several processes would each apply their own.
Times are integer seconds since the Unix epoch unless a name says otherwise.
"""

from __future__ import annotations

import abc
import functools
import json
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, Callable, Mapping, Sequence


@dataclass(frozen=True)
class Instance:
    """An instance (shop) with its authentication state."""

    serial: int
    id: str
    merchant_pub: bytes
    auth_method: str
    password_hash: str | None = field(repr=False)
    email: str | None
    email_validated: bool
    phone_number: str | None
    phone_validated: bool
    settings_json: str
    deleted: bool
    created_at: int

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """The stored instance configuration (name, address, delays, ...).

        Parsed once per record; callers copy before changing it.
        """
        result: dict[str, Any] = json.loads(self.settings_json)
        return result


@dataclass(frozen=True)
class NewInstance:
    """What creating an instance stores."""

    id: str
    auth_method: str
    password_hash: str | None = field(repr=False)
    email: str | None
    phone_number: str | None
    settings: dict[str, Any]
    merchant_priv: bytes = field(repr=False)
    merchant_pub: bytes
    email_validated: bool = False
    phone_validated: bool = False


@dataclass(frozen=True)
class AccessToken:
    """An issued access token (never its secret)."""

    serial: int
    instance_serial: int
    creation_time: int
    expiration: int | None
    scope: str
    refreshable: bool
    description: str | None


@dataclass(frozen=True)
class NewAccessToken:
    """What issuing an access token stores."""

    digest: bytes
    creation_time: int
    expiration: int | None
    scope: str
    refreshable: bool
    description: str | None


@dataclass(frozen=True)
class Challenge:
    """A multi-factor challenge bound to one protected request."""

    serial: int
    instance_id: str
    operation: str
    body_digest: bytes
    channel: str
    address: str
    tan_salt: bytes | None
    tan_digest: bytes | None
    retry_counter: int
    created_at: int
    expires_at: int
    solve_expiration: int | None
    last_sent: int | None
    solved: bool
    consumed: bool


@dataclass(frozen=True)
class NewChallenge:
    """What creating a challenge stores; ``id_digest`` is the digest of its id."""

    id_digest: bytes
    instance_id: str
    operation: str
    body_digest: bytes
    channel: str
    address: str
    created_at: int
    expires_at: int


@dataclass(frozen=True)
class ThrottleState:
    """Back-off state of one throttling key."""

    failures: int
    blocked_until: float


class InstanceExists(Exception):
    """Creating an instance whose id (ignoring case) is taken."""


class ChallengeAlreadyConsumed(Exception):
    """A protected operation tried to consume a challenge already consumed."""


class CredentialsChanged(Exception):
    """The instance's credentials changed after the request was authenticated."""


class Store(abc.ABC):
    """Async storage of instances, tokens, challenges and throttling state."""

    # -- life cycle -------------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; pending work is finished first."""

    # -- instances --------------------------------------------------------------------

    @abc.abstractmethod
    async def get_instance(self, instance_id: str) -> Instance | None:
        """The instance with exactly this id."""

    @abc.abstractmethod
    async def find_instance_folded(self, instance_id: str) -> Instance | None:
        """The instance whose id equals ``instance_id`` ignoring case."""

    @abc.abstractmethod
    async def list_instances(self) -> list[Instance]:
        """All instances, deleted ones included, by id."""

    @abc.abstractmethod
    async def create_instance(
        self, new: NewInstance, consume: Sequence[int] = ()
    ) -> Instance:
        """Store a new instance; raises :class:`InstanceExists` if the id is taken."""

    @abc.abstractmethod
    async def update_instance(
        self,
        serial: int,
        merge: Callable[[dict[str, Any]], dict[str, Any]],
        contacts: Mapping[str, str | None],
        consume: Sequence[int] = (),
    ) -> bool:
        """Replace the settings by ``merge(current settings)`` and set the given
        contacts (``email``, ``phone_number``), in one transaction; a changed
        address loses its validation.  False if the instance is gone or deleted.
        """

    @abc.abstractmethod
    async def set_auth(
        self,
        serial: int,
        auth_method: str,
        password_hash: str | None,
        consume: Sequence[int] = (),
    ) -> None:
        """Change the credentials and revoke every access token of the instance."""

    @abc.abstractmethod
    async def delete_instance(
        self, serial: int, purge: bool, consume: Sequence[int] = ()
    ) -> None:
        """Purge the instance, or mark it deleted and destroy its private key.

        Either way its access tokens are revoked.
        """

    @abc.abstractmethod
    async def mark_address_validated(
        self, instance_id: str, channel: str, address: str
    ) -> None:
        """Record that ``address`` of a channel proved reachable (if still current)."""

    # -- access tokens ----------------------------------------------------------------

    @abc.abstractmethod
    async def issue_token(
        self,
        instance_serial: int,
        new: NewAccessToken,
        consume: Sequence[int] = (),
        *,
        expected_hash: str | None | EllipsisType = ...,
    ) -> int:
        """Store an access token; returns its serial.

        With ``expected_hash`` (the password hash the caller was authenticated
        against) the token is stored only if the instance still has that hash and is
        not deleted, checked in the same transaction; otherwise
        :class:`CredentialsChanged`.  Without the check, a login whose password was
        verified just before a concurrent password change committed would store a
        token of the old password after the change had revoked all others.
        """

    @abc.abstractmethod
    async def authenticate_token(
        self, instance_id: str, digest: bytes, now: int
    ) -> tuple[Instance, AccessToken] | None:
        """The live instance and unexpired token with this digest, in one read."""

    @abc.abstractmethod
    async def list_tokens(
        self, instance_serial: int, limit: int, offset: int, now: int
    ) -> list[AccessToken]:
        """Unexpired tokens by serial: ascending after ``offset`` if ``limit`` > 0,
        else descending before it, at most ``abs(limit)``."""

    @abc.abstractmethod
    async def revoke_token(self, instance_serial: int, serial: int) -> bool:
        """Delete one token of the instance; whether it existed."""

    @abc.abstractmethod
    async def revoke_all_tokens(self, instance_serial: int) -> int:
        """Delete every token of the instance; how many there were."""

    # -- challenges -------------------------------------------------------------------

    @abc.abstractmethod
    async def create_challenges(
        self, new: Sequence[NewChallenge], max_active: int, now: int
    ) -> list[int] | None:
        """Store challenges unless the instance would exceed ``max_active`` unsolved,
        unexpired ones for the same operation (then ``None``).

        Counting per operation keeps a flood of public forgot-password requests from
        blocking the instance's own logins."""

    @abc.abstractmethod
    async def get_challenge(self, id_digest: bytes) -> Challenge | None:
        """The challenge with this id digest."""

    @abc.abstractmethod
    async def record_transmission(
        self,
        serial: int,
        tan_salt: bytes,
        tan_digest: bytes,
        retries: int,
        now: int,
        solve_expiration: int,
        earliest_previous: int,
    ) -> bool:
        """Store a newly sent TAN unless another was sent after ``earliest_previous``;
        whether it was stored."""

    @abc.abstractmethod
    async def get_challenges(self, id_digests: Sequence[bytes]) -> list[Challenge]:
        """The challenges among these id digests that exist."""

    @abc.abstractmethod
    async def take_attempt(self, serial: int) -> int | None:
        """Use up one attempt at the current TAN before it is compared.

        Returns the attempts left afterwards, or ``None`` if none was left.
        """

    @abc.abstractmethod
    async def mark_solved(self, serial: int) -> bool:
        """Mark the challenge solved; False if it already was."""

    # -- throttling -------------------------------------------------------------------

    @abc.abstractmethod
    async def get_throttle(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        """State of those keys that have any."""

    @abc.abstractmethod
    async def record_failure(
        self,
        key: str,
        now: float,
        delay_for: Callable[[int], float],
        forget_after_s: float,
    ) -> ThrottleState:
        """Count one failure; ``delay_for(failures)`` gives the block in seconds.

        A count whose last failure is older than ``forget_after_s`` starts anew.
        """

    @abc.abstractmethod
    async def clear_failures(
        self, instance_key: str, pair_key: str, address_key: str
    ) -> None:
        """After a success: forget the instance's and the pair's failures, and take
        the pair's failures off the address's count, in one transaction."""

    @abc.abstractmethod
    async def count_attempt(
        self, key: str, now: float, window_s: float
    ) -> ThrottleState:
        """Count one attempt in the key's current window (a new window of
        ``window_s`` starts when the last one is over); the state afterwards, whose
        ``blocked_until`` is the end of the window."""

    @abc.abstractmethod
    async def reset_throttle(self, keys: Sequence[str]) -> None:
        """Forget the failures of these keys."""
