"""Secrets: password hashes, access tokens, TANs and instance key pairs.

Passwords are hashed with bcrypt.  bcrypt reads at most 72 bytes, so the password is
first reduced to a fixed-length SHA-256 digest (base64, no NUL bytes): long passwords
keep all their entropy and never raise.  bcrypt always runs in a worker thread.

Access tokens and challenge ids are 32 random bytes; they carry enough entropy that a
plain SHA-256 digest is a safe way to store them and look them up by index.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

import bcrypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TOKEN_PREFIX = "secret-token:"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Python's own base-32 digits (``int(text, 32)``), value for value.
_INT_DIGITS = "0123456789abcdefghijklmnopqrstuv"
_CROCKFORD_VALUES = {c: i for i, c in enumerate(_CROCKFORD)}
_CROCKFORD_VALUES.update({"O": 0, "I": 1, "L": 1})
#: Not a digit ``int(..., 32)`` reads: what every byte outside the alphabet becomes.
_NOT_A_DIGIT = b"!"
#: Byte for byte, a Crockford digit (either case) to the digit of the same value
#: that ``int(..., 32)`` reads; anything else to :data:`_NOT_A_DIGIT`.
_TO_INT_DIGITS = bytes(
    (
        ord(_INT_DIGITS[_CROCKFORD_VALUES[chr(byte).upper()]])
        if chr(byte).upper() in _CROCKFORD_VALUES
        else _NOT_A_DIGIT[0]
    )
    for byte in range(256)
)
#: Length of the Crockford text of a 32-byte access token.
TOKEN_TEXT_LENGTH = 52


def crockford_encode(data: bytes) -> str:
    """Taler's Crockford base32 (no padding, most significant bits first)."""
    value = int.from_bytes(data, "big")
    bits = len(data) * 8
    chars = (bits + 4) // 5
    value <<= chars * 5 - bits
    out = []
    for _ in range(chars):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def crockford_decode(text: str) -> bytes | None:
    """Inverse of :func:`crockford_encode`; ``None`` if ``text`` is not base32.

    Lower case and the look-alikes O, I and L are accepted, as Crockford intends.
    The text is mapped digit for digit onto the digits ``int(..., 32)`` reads, so
    that C code does the work: this runs for every bearer token.  Every character
    outside the alphabet maps to a character ``int`` refuses, also those it would
    otherwise take (signs, spaces, underscores, other scripts' digits).  The bits
    beyond the last whole byte are padding and are dropped.
    """
    if not text:
        return b""
    if not text.isascii():
        return None
    digits = text.encode("ascii").translate(_TO_INT_DIGITS)
    if _NOT_A_DIGIT in digits:
        return None
    nbytes = len(text) * 5 // 8
    value = int(digits, 32)
    return (value >> (len(text) * 5 - nbytes * 8)).to_bytes(nbytes, "big")


# -- passwords ------------------------------------------------------------------------


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def _hash_password_sync(password: str, cost: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(cost)).decode("ascii")


def _check_password_sync(password: str, stored: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), stored.encode("ascii"))
    except ValueError:
        return False


async def hash_password(password: str, cost: int) -> str:
    """The bcrypt hash to store for ``password``."""
    return await asyncio.to_thread(_hash_password_sync, password, cost)


async def check_password(password: str, stored: str | None, decoy: str) -> bool:
    """Whether ``password`` matches ``stored``.

    With no stored hash (unknown instance, no password) the ``decoy`` hash is checked
    instead, so that every answer costs one bcrypt computation.
    """
    if stored is None:
        await asyncio.to_thread(_check_password_sync, password, decoy)
        return False
    return await asyncio.to_thread(_check_password_sync, password, stored)


def make_decoy_hash(cost: int) -> str:
    """A hash of a random password, checked when there is nothing real to check."""
    return _hash_password_sync(secrets.token_urlsafe(16), cost)


# -- access tokens and other high-entropy secrets -------------------------------------


def new_access_token() -> tuple[str, bytes]:
    """A fresh access token: its ``secret-token:`` text and the digest to store."""
    raw = secrets.token_bytes(32)
    return TOKEN_PREFIX + crockford_encode(raw), digest_secret(raw)


def parse_access_token(secret: str) -> bytes | None:
    """The digest of an access token text (without prefix), if it has that shape."""
    if len(secret) != TOKEN_TEXT_LENGTH:
        return None
    raw = crockford_decode(secret)
    return digest_secret(raw) if raw is not None else None


def digest_secret(raw: bytes) -> bytes:
    """Digest under which a high-entropy secret is stored and looked up."""
    return hashlib.sha256(raw).digest()


def secrets_equal(left: str, right: str) -> bool:
    """Constant-time comparison of two secrets given as text."""
    return hmac.compare_digest(left.encode("utf-8"), right.encode("utf-8"))


# -- TANs -----------------------------------------------------------------------------


def new_tan() -> str:
    """Eight random decimal digits."""
    return f"{secrets.randbelow(10**8):08d}"


def tan_digest(tan: str, salt: bytes) -> bytes:
    """Salted digest of a TAN; short TANs are protected by the attempt limit."""
    return hashlib.sha256(salt + tan.strip().encode("utf-8")).digest()


def tan_matches(tan: str, salt: bytes, stored: bytes) -> bool:
    """Constant-time check of a TAN against its stored digest."""
    return hmac.compare_digest(tan_digest(tan, salt), stored)


# -- instance key pairs ---------------------------------------------------------------


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as raw (private, public) bytes."""
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return raw_private, raw_public
