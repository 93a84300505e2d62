"""Helpers of the two-factor tests: the file TAN helper and solving challenges.

The daemon runs ``contrib/tan-to-file.sh`` as its SMS and e-mail helper; the helper
appends each message to the file named by ``MERCHANT_AUTHD_TAN_FILE``, where the
tests read the TAN back, exactly as a merchant would read it from a phone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from merchant_authd.web.keys import CONTEXT

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
FILE_HELPER = CONTRIB / "tan-to-file.sh"
SENDMAIL_HELPER = CONTRIB / "tan-email-sendmail.sh"
EMAIL = "owner@shop.example"
PHONE = "+41790001234"
_RECORD = re.compile(r"^To: (\S+)\n(.*?)\n\n", re.MULTILINE | re.DOTALL)
_TAN = re.compile(r"\b([0-9]{8})\b")


def use_tan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the file helper at a fresh file in ``tmp_path``; that file."""
    path = tmp_path / "tans.txt"
    monkeypatch.setenv("MERCHANT_AUTHD_TAN_FILE", str(path))
    return path


def helpers(**overrides: Any) -> dict[str, Any]:
    """Settings overrides with the file helper on both channels."""
    return {"helper_sms": FILE_HELPER, "helper_email": FILE_HELPER, **overrides}


def messages(path: Path, address: str) -> list[str]:
    """The messages the file helper wrote for ``address``, oldest first."""
    if not path.exists():
        return []
    text = path.read_text("utf-8")
    return [body for to, body in _RECORD.findall(text) if to == address]


def last_tan(path: Path, address: str) -> str:
    """The TAN in the latest message to ``address``."""
    found = messages(path, address)
    assert found, f"no message to {address}"
    match = _TAN.search(found[-1])
    assert match is not None
    return match.group(1)


def prefix(instance_id: str) -> str:
    """The path prefix of an instance (none for the admin instance)."""
    return "" if instance_id == "admin" else f"/instances/{instance_id}"


async def request_tan(
    client: TestClient, instance_id: str, challenge_id: str
) -> dict[str, Any]:
    """Have the TAN of a challenge sent; the ``ChallengeRequestResponse``."""
    response = await client.post(
        f"{prefix(instance_id)}/challenge/{challenge_id}", json={}
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def confirm(
    client: TestClient, instance_id: str, challenge_id: str, tan: str
) -> Any:
    """Post a TAN to a challenge; the response."""
    return await client.post(
        f"{prefix(instance_id)}/challenge/{challenge_id}/confirm", json={"tan": tan}
    )


async def solve(
    client: TestClient, instance_id: str, challenge: dict[str, Any], tan_file: Path
) -> None:
    """Request, read and confirm the TAN of one challenge of a 202 answer."""
    await request_tan(client, instance_id, challenge["challenge_id"])
    address = EMAIL if challenge["tan_channel"] == "email" else PHONE
    response = await confirm(
        client, instance_id, challenge["challenge_id"], last_tan(tan_file, address)
    )
    assert response.status == 204, await response.text()


async def solve_all(
    client: TestClient, instance_id: str, answer: dict[str, Any], tan_file: Path
) -> str:
    """Solve every challenge of a ``ChallengeResponse``; the header value."""
    for challenge in answer["challenges"]:
        await solve(client, instance_id, challenge, tan_file)
    return ",".join(c["challenge_id"] for c in answer["challenges"])


async def mark_validated(client: TestClient, instance_id: str, *channels: str) -> None:
    """Set validated flags directly in the store (the HTTP way is tested apart)."""
    store = client.app[CONTEXT].store
    for channel in channels:
        address = EMAIL if channel == "email" else PHONE
        await store.mark_address_validated(instance_id, channel, address)
