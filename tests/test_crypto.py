"""Crockford base32 as access tokens and public keys are written."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from merchant_authd import crypto


@given(st.binary(max_size=80))
def test_decode_inverts_encode(data: bytes) -> None:
    assert crypto.crockford_decode(crypto.crockford_encode(data)) == data


@given(st.binary(min_size=1, max_size=40))
def test_lower_case_and_look_alikes_decode_alike(data: bytes) -> None:
    text = crypto.crockford_encode(data)
    sloppy = text.lower().replace("0", "o").replace("1", "l")
    assert crypto.crockford_decode(sloppy) == data


def test_known_value() -> None:
    # 0xff 0x00: bits 11111 11100 00000 0 -> "ZW00" with one padding bit.
    assert crypto.crockford_encode(b"\xff\x00") == "ZW00"
    assert crypto.crockford_decode("ZW00") == b"\xff\x00"


@pytest.mark.parametrize(
    "text",
    ["U", "u0", "0_0", " 00", "00 ", "+0", "-0", "0\u00fc", "=" * 8, "\u0661" * 4],
)
def test_text_outside_the_alphabet_is_refused(text: str) -> None:
    # int(..., 32), which does the decoding, would accept some of these.
    assert crypto.crockford_decode(text) is None


def test_access_token_digest_needs_the_full_length() -> None:
    token, digest = crypto.new_access_token()
    secret = token[len(crypto.TOKEN_PREFIX) :]
    assert crypto.parse_access_token(secret) == digest
    assert crypto.parse_access_token(secret[:-1]) is None
    assert crypto.parse_access_token(secret + "0") is None


_ALPHABET = set("0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyzOoIiLl")


@given(st.text(max_size=12))
@example("+1")
@example(" 1")
@example("1_0")
@example("\u0661")
def test_exactly_the_texts_of_the_alphabet_decode(text: str) -> None:
    decoded = crypto.crockford_decode(text)
    assert (decoded is not None) == set(text).issubset(_ALPHABET)
