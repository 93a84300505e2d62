"""Multi-factor authentication: challenges, their binding, TAN delivery and solving.

A protected operation (token issuance by password, changing credentials, forgot
password, deleting an instance, changing its addresses, self-provisioning) first
answers 202 with one challenge per TAN channel.  Each challenge is bound to the
instance, the operation and a SHA-512 digest of the exact request body (plus the
query where it changes the effect).  The client has a TAN sent, confirms it, and
repeats the request with the ``Taler-Challenge-Ids`` header; the solved challenges
are consumed in the same transaction as the operation, so a solved challenge
authorises one operation only.
A header that does not satisfy the operation is treated as absent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from . import crypto
from .context import Context
from .errors import EC, TalerError, missing_parameter, unknown_instance
from .schemas import timestamp
from .store import Challenge, ChallengeAlreadyConsumed, Instance, NewChallenge
from .tan import DeliveryBusy, DeliveryFailed, mask_address, tan_message

log = logging.getLogger("merchant_authd.mfa")

HEADER = "Taler-Challenge-Ids"
MAX_IDS = 16
MAX_ATTEMPTS = 3
#: Resending extends a challenge's life, but never beyond this after its creation.
MAX_CHALLENGE_LIFETIME_S = 86_400

#: Operation names bound into challenges.
TOKEN = "POST /private/token"
AUTH = "POST /private/auth"
FORGOT_PASSWORD = "POST /forgot-password"
DELETE_INSTANCE = "DELETE /private"
PATCH_INSTANCE = "PATCH /private"
SELF_PROVISION = "POST /instances"

T = TypeVar("T")


class ChallengeRequired(Exception):
    """The operation needs solved challenges first: answer 202 with ``body``."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        super().__init__("second factor required")


@dataclass(frozen=True)
class Requirement:
    """Which channels (and addresses) a protected operation must be confirmed by."""

    channels: tuple[tuple[str, str | None], ...]
    combi_and: bool


def body_digest(body: bytes, query: str = "") -> bytes:
    """What a challenge binds of a request: its body and the effective query."""
    return hashlib.sha512(body + b"\0" + query.encode("utf-8")).digest()


def _address(instance: Instance, channel: str) -> str | None:
    return instance.email if channel == "email" else instance.phone_number


NOT_REQUIRED = Requirement((), combi_and=False)


def requirement_for(
    ctx: Context, instance: Instance, *, exempt: bool = False
) -> Requirement:
    """What a protected operation of ``instance`` must be confirmed by.

    With ``MANDATORY_TAN_CHANNELS`` configured, exactly those channels, all of them
    (other validated channels play no part).  Otherwise the channels the instance
    has validated, any one of which suffices; none means no second factor.  An
    ``exempt`` caller (the operator, see ``web.request.mfa_exempt``) needs none.
    """
    if exempt:
        return NOT_REQUIRED
    mandatory = ctx.settings.mandatory_tan_channels
    if mandatory:
        return Requirement(
            tuple((c, _address(instance, c)) for c in sorted(set(mandatory))),
            combi_and=True,
        )
    channels = []
    if instance.email_validated and instance.email:
        channels.append(("email", instance.email))
    if instance.phone_validated and instance.phone_number:
        channels.append(("sms", instance.phone_number))
    return Requirement(tuple(channels), combi_and=False)


def signup_requirement(ctx: Context, body: Mapping[str, Any]) -> Requirement:
    """A sign-up proves every address it gives, and those of the mandatory channels.

    400 when the body has no address at all, or lacks one a mandatory channel needs.
    """
    addresses = {"email": body.get("email"), "sms": body.get("phone_number")}
    mandatory = set(ctx.settings.mandatory_tan_channels)
    channels = {c for c, address in addresses.items() if address} | mandatory
    if not channels:
        raise TalerError(
            400,
            EC.GENERIC_PARAMETER_MISSING,
            detail="sign-up needs an e-mail address or a phone number",
            extra={"parameter": "email"},
        )
    for channel in sorted(channels):
        if not addresses[channel]:
            raise missing_parameter("email" if channel == "email" else "phone_number")
    return Requirement(
        tuple((c, addresses[c]) for c in sorted(channels)), combi_and=True
    )


def parse_ids(header: str | None) -> list[str]:
    """The challenge ids of a ``Taler-Challenge-Ids`` header (commas, blanks)."""
    if not header:
        return []
    ids = [part.strip() for part in header.split(",") if part.strip()]
    return ids[:MAX_IDS]


def _id_digest(challenge_id: str) -> bytes | None:
    raw = crypto.crockford_decode(challenge_id)
    if raw is None or len(challenge_id) != crypto.TOKEN_TEXT_LENGTH:
        return None
    return crypto.digest_secret(raw)


def usable(ctx: Context, requirement: Requirement) -> Requirement:
    """The channels of ``requirement`` that can deliver a TAN.

    When all channels must be solved (the mandatory ones), each needs an address and
    a helper; when any one suffices (the validated ones), unusable ones are left
    out.  Raises 403 ``MERCHANT_GENERIC_MFA_MISSING`` when what is left cannot
    satisfy the operation.
    """
    kept = []
    for channel, address in requirement.channels:
        if address and ctx.settings.helper_for(channel) is not None:
            kept.append((channel, address))
        elif requirement.combi_and:
            raise _mfa_missing(channel)
    if requirement.channels and not kept:
        raise _mfa_missing(requirement.channels[0][0])
    return Requirement(tuple(kept), requirement.combi_and)


def _mfa_missing(channel: str) -> TalerError:
    return TalerError(
        403, EC.MERCHANT_GENERIC_MFA_MISSING, detail=f"no usable {channel} channel"
    )


async def require(
    ctx: Context,
    *,
    instance_id: str,
    operation: str,
    digest: bytes,
    requirement: Requirement,
    header: str | None,
    before_issue: Callable[[], Awaitable[None]] | None = None,
) -> list[int]:
    """Serials of the solved challenges that authorise this request.

    Raises :class:`ChallengeRequired` (202) when they are missing, or 403
    ``MERCHANT_GENERIC_MFA_MISSING`` when a needed channel cannot be used.
    ``before_issue`` runs just before new challenges are created (a rate limit).
    """
    if not requirement.channels:
        return []
    requirement = usable(ctx, requirement)
    now = int(time.time())
    solved = await _solved(
        ctx, instance_id, operation, digest, requirement, header, now
    )
    if solved is not None:
        return solved
    if before_issue is not None:
        await before_issue()
    issued = []
    new = []
    for channel, address in requirement.channels:
        assert address is not None
        challenge_id, id_digest = _new_id()
        issued.append((challenge_id, channel, address))
        new.append(
            NewChallenge(
                id_digest=id_digest,
                instance_id=instance_id,
                operation=operation,
                body_digest=digest,
                channel=channel,
                address=address,
                created_at=now,
                expires_at=now + ctx.settings.tan_solve_time // 1_000_000,
            )
        )
    if await ctx.store.create_challenges(new, ctx.settings.tan_max_active, now) is None:
        raise TalerError(
            429,
            EC.MERCHANT_TAN_TOO_EARLY,
            "too many open challenges; solve or let some expire first",
            headers={"Retry-After": "60"},
        )
    raise ChallengeRequired(
        {
            "challenges": [
                {
                    "challenge_id": challenge_id,
                    "tan_channel": channel,
                    "tan_info": mask_address(channel, address),
                }
                for challenge_id, channel, address in issued
            ],
            "combi_and": requirement.combi_and,
        }
    )


async def protect(
    ctx: Context,
    header: str | None,
    *,
    instance_id: str,
    operation: str,
    digest: bytes,
    requirement: Requirement,
    commit: Callable[[list[int]], Awaitable[T]],
    before_issue: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run a protected operation: ``commit(consume)`` once ``header`` names solved
    challenges that satisfy ``requirement``; its result.

    ``commit`` performs the operation and consumes the challenges ``consume`` in
    the same transaction.  Raises :class:`ChallengeRequired` (202) or 403 as
    :func:`require` does.  When a concurrent request consumed the challenges
    between the check and the commit (``ChallengeAlreadyConsumed``), the request is
    treated like any replay, as if it named no challenges: 202 with fresh ones.
    """
    binding: dict[str, Any] = {
        "instance_id": instance_id,
        "operation": operation,
        "digest": digest,
        "requirement": requirement,
    }
    consume = await require(ctx, **binding, header=header, before_issue=before_issue)
    try:
        return await commit(consume)
    except ChallengeAlreadyConsumed:
        await require(ctx, **binding, header=None)
    raise AssertionError("require() returned although nothing was solved")


async def _solved(
    ctx: Context,
    instance_id: str,
    operation: str,
    digest: bytes,
    requirement: Requirement,
    header: str | None,
    now: int,
) -> list[int] | None:
    digests = [d for d in map(_id_digest, parse_ids(header)) if d is not None]
    if not digests:
        return None
    wanted = set(requirement.channels)
    found: dict[str, int] = {}
    for challenge in await ctx.store.get_challenges(digests):
        if (
            challenge.instance_id == instance_id
            and challenge.operation == operation
            and hmac.compare_digest(challenge.body_digest, digest)
            and challenge.solved
            and not challenge.consumed
            and challenge.expires_at > now
            and (challenge.channel, challenge.address) in wanted
        ):
            found.setdefault(challenge.channel, challenge.serial)
    channels = {channel for channel, _ in requirement.channels}
    if requirement.combi_and:
        return list(found.values()) if channels <= set(found) else None
    return list(found.values())[:1] or None


def _new_id() -> tuple[str, bytes]:
    raw = secrets.token_bytes(32)
    return crypto.crockford_encode(raw), crypto.digest_secret(raw)


async def _find(
    ctx: Context, instance_id: str, challenge_id: str, *, accept_expired: bool = False
) -> Challenge:
    """The challenge of this instance with this id; 404 if there is none (or if it
    expired, unless ``accept_expired``).

    A sign-up's challenges exist before their instance does; any other challenge
    needs a live instance, and a path naming an unknown one is answered like every
    other path under ``/instances/$I`` (404 ``MERCHANT_GENERIC_INSTANCE_UNKNOWN``).
    """
    digest = _id_digest(challenge_id)
    challenge = await ctx.store.get_challenge(digest) if digest else None
    if challenge is not None and challenge.instance_id != instance_id:
        challenge = None
    if challenge is None or challenge.operation != SELF_PROVISION:
        instance = await ctx.store.get_instance(instance_id)
        if instance is None or instance.deleted:
            raise unknown_instance(instance_id)
    if challenge is None:
        raise TalerError(404, EC.MERCHANT_TAN_CHALLENGE_UNKNOWN)
    if not accept_expired and challenge.expires_at <= int(time.time()):
        raise TalerError(404, EC.MERCHANT_TAN_CHALLENGE_UNKNOWN, detail="expired")
    return challenge


async def send_tan(
    ctx: Context, instance_id: str, challenge_id: str, client_address: str
) -> dict[str, Any]:
    """Generate and deliver a (new) TAN; the ``ChallengeRequestResponse``.

    Transmissions are limited per challenge and per client address (429
    ``MERCHANT_TAN_TOO_EARLY``), so that nobody turns the public endpoint into a
    free SMS or mail pump.
    """
    challenge = await _find(ctx, instance_id, challenge_id)
    if challenge.solved:
        raise TalerError(410, EC.MERCHANT_TAN_CHALLENGE_SOLVED)
    now = int(time.time())
    gap = ctx.settings.tan_retransmission // 1_000_000
    if challenge.last_sent is not None and now < challenge.last_sent + gap:
        wait = challenge.last_sent + gap - now
        raise _too_early(wait, f"retransmission allowed in {wait} s")
    helper = ctx.settings.helper_for(challenge.channel)
    if helper is None:
        raise TalerError(
            502, EC.MERCHANT_TAN_MFA_HELPER_EXEC_FAILED, detail="no helper"
        )
    await _count_transmission(ctx, challenge, client_address)
    tan = crypto.new_tan()
    solve_until = min(
        now + ctx.settings.tan_solve_time // 1_000_000,
        challenge.created_at + MAX_CHALLENGE_LIFETIME_S,
    )
    message = tan_message(instance_id, tan, max(1, math.ceil((solve_until - now) / 60)))
    try:
        with ctx.tan_sender.exclusive(challenge.serial):
            await ctx.tan_sender.send(helper, challenge.address, message)
            salt = secrets.token_bytes(16)
            stored = await ctx.store.record_transmission(
                challenge.serial,
                salt,
                crypto.tan_digest(tan, salt),
                MAX_ATTEMPTS,
                now,
                solve_until,
                now - gap,
            )
    except DeliveryBusy:
        raise _too_early(1, "a TAN is being delivered right now") from None
    except DeliveryFailed as exc:
        raise TalerError(
            502, EC.MERCHANT_TAN_MFA_HELPER_EXEC_FAILED, detail=str(exc)
        ) from None
    if not stored:
        raise _too_early(1, "another TAN was sent meanwhile")
    log.info("TAN for challenge of %s sent by %s", instance_id, challenge.channel)
    return {
        "solve_expiration": timestamp(solve_until),
        "earliest_retransmission": timestamp(now + gap),
    }


async def _count_transmission(
    ctx: Context, challenge: Challenge, client_address: str
) -> None:
    try:
        await ctx.sends_per_challenge.attempt(str(challenge.serial))
        await ctx.sends_per_address.attempt(client_address)
    except TalerError as exc:
        raise TalerError(
            429,
            EC.MERCHANT_TAN_TOO_EARLY,
            detail="too many TANs sent; try again later",
            headers=exc.headers,
        ) from None


async def confirm(ctx: Context, instance_id: str, challenge_id: str, tan: str) -> None:
    """Check a TAN; on success the challenge is solved and its address validated."""
    # An expired TAN is answered like a wrong one with no attempts left (409), as
    # the API recommends, rather than as an unknown challenge.
    challenge = await _find(ctx, instance_id, challenge_id, accept_expired=True)
    if challenge.solved:
        return
    now = int(time.time())
    if challenge.tan_digest is None or challenge.tan_salt is None:
        raise _failed(0, "no TAN was sent yet; request one first")
    if (
        challenge.solve_expiration is None
        or challenge.solve_expiration <= now
        or challenge.expires_at <= now
    ):
        raise _failed(0, "the TAN expired")
    left = await ctx.store.take_attempt(challenge.serial)
    if left is None:
        raise TalerError(429, EC.MERCHANT_TAN_TOO_MANY_ATTEMPTS)
    if not crypto.tan_matches(tan, challenge.tan_salt, challenge.tan_digest):
        log.warning("wrong TAN for a challenge of instance %s", instance_id)
        raise _failed(left, "wrong TAN")
    await ctx.store.mark_solved(challenge.serial)
    await ctx.store.mark_address_validated(
        instance_id, challenge.channel, challenge.address
    )


def _failed(left: int, detail: str) -> TalerError:
    return TalerError(
        409,
        EC.MERCHANT_TAN_CHALLENGE_FAILED,
        detail=detail,
        extra={"retry_counter": left},
    )


def _too_early(wait_s: int, detail: str) -> TalerError:
    return TalerError(
        429,
        EC.MERCHANT_TAN_TOO_EARLY,
        detail=detail,
        headers={"Retry-After": str(max(1, wait_s))},
    )
