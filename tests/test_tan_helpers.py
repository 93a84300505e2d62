"""The TAN helper programs in ``contrib/`` and the runner that starts helpers.

The e-mail helper is tested against a fake ``sendmail`` named by ``SENDMAIL``; the
file helper writes where ``MERCHANT_AUTHD_TAN_FILE`` or ``XDG_RUNTIME_DIR`` says.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import ADMIN_PASSWORD, basic, create_instance
from tan_support import (
    EMAIL,
    FILE_HELPER,
    PHONE,
    SENDMAIL_HELPER,
    confirm,
    mark_validated,
)

from merchant_authd.context import BOOTSTRAP_VARIABLES
from merchant_authd.tan import DeliveryFailed, TanSender, mask_address, tan_message

MESSAGE = "Your TAN for merchant instance shop is 12345678.\nSecond line.\n"
BOUND_S = 30


def _run(helper: Path, *args: str, env: dict[str, str], stdin: str = MESSAGE) -> int:
    done = subprocess.run(
        [str(helper), *args],
        input=stdin.encode(),
        env=env,
        capture_output=True,
        timeout=BOUND_S,
        check=False,
    )
    return done.returncode


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture
def fake_sendmail(tmp_path: Path) -> tuple[Path, Path]:
    """A ``sendmail`` that records its arguments and input; (program, record)."""
    record = tmp_path / "sent.txt"
    program = tmp_path / "sendmail"
    program.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{record}.args"\n'
        f'cat > "{record}"\n'
        'exit "${FAKE_SENDMAIL_STATUS:-0}"\n'
    )
    program.chmod(0o755)
    return program, record


@pytest.mark.parametrize("helper", [FILE_HELPER, SENDMAIL_HELPER])
def test_helpers_are_documented_executables(helper):
    assert os.access(helper, os.X_OK)
    lines = helper.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"
    header = [line for line in lines[1:] if line.startswith("#")]
    assert len(header) >= 10
    assert "merchant-authd" in lines[1]


# -- the file helper -----------------------------------------------------------------


def test_file_helper_appends_records(tmp_path):
    target = tmp_path / "tans.txt"
    env = {**_base_env(), "MERCHANT_AUTHD_TAN_FILE": str(target)}
    assert _run(FILE_HELPER, PHONE, env=env) == 0
    assert _run(FILE_HELPER, EMAIL, env=env, stdin="second\n") == 0
    text = target.read_text()
    assert text == f"To: {PHONE}\n{MESSAGE}\nTo: {EMAIL}\nsecond\n\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_file_helper_defaults_to_the_runtime_dir(tmp_path):
    env = {**_base_env(), "XDG_RUNTIME_DIR": str(tmp_path)}
    assert _run(FILE_HELPER, PHONE, env=env) == 0
    assert "12345678" in (tmp_path / "merchant-authd-tans.txt").read_text()


@pytest.mark.parametrize("args", [(), (EMAIL, PHONE)])
def test_file_helper_wants_one_address(tmp_path, args):
    env = {**_base_env(), "MERCHANT_AUTHD_TAN_FILE": str(tmp_path / "t")}
    assert _run(FILE_HELPER, *args, env=env) != 0
    assert not (tmp_path / "t").exists()


def test_file_helper_fails_when_it_cannot_write(tmp_path):
    env = {**_base_env(), "MERCHANT_AUTHD_TAN_FILE": str(tmp_path / "no" / "t")}
    assert _run(FILE_HELPER, PHONE, env=env) != 0


# -- the sendmail helper -------------------------------------------------------------


def test_sendmail_helper_hands_the_mail_over(fake_sendmail):
    program, record = fake_sendmail
    env = {**_base_env(), "SENDMAIL": str(program)}
    assert _run(SENDMAIL_HELPER, EMAIL, env=env) == 0
    args = Path(f"{record}.args").read_text().splitlines()
    assert args == ["-i", "--", EMAIL]
    mail = record.read_text()
    headers, _, body = mail.partition("\n\n")
    assert f"To: {EMAIL}" in headers.splitlines()
    assert any(line.startswith("Subject: ") for line in headers.splitlines())
    assert body == MESSAGE


def test_sendmail_helper_subject_and_sender(fake_sendmail):
    program, record = fake_sendmail
    env = {
        **_base_env(),
        "SENDMAIL": str(program),
        "TAN_MAIL_SUBJECT": "Shop login code",
        "TAN_MAIL_FROM": "noreply@shop.example",
    }
    assert _run(SENDMAIL_HELPER, EMAIL, env=env) == 0
    headers = record.read_text().partition("\n\n")[0].splitlines()
    assert "Subject: Shop login code" in headers
    assert "From: noreply@shop.example" in headers


def test_sendmail_helper_reports_failure(fake_sendmail):
    program, _ = fake_sendmail
    env = {**_base_env(), "SENDMAIL": str(program), "FAKE_SENDMAIL_STATUS": "75"}
    assert _run(SENDMAIL_HELPER, EMAIL, env=env) != 0
    env = {**_base_env(), "SENDMAIL": str(program.parent / "missing")}
    assert _run(SENDMAIL_HELPER, EMAIL, env=env) != 0


@pytest.mark.parametrize(
    "address",
    [
        "-oQ/tmp@x.example",
        "a@b.example\nBcc: c@d.example",
        "a b@c.example",
        "nobody",
        "",
    ],
)
def test_sendmail_helper_refuses_unusable_addresses(fake_sendmail, address):
    program, record = fake_sendmail
    env = {**_base_env(), "SENDMAIL": str(program)}
    assert _run(SENDMAIL_HELPER, address, env=env) != 0
    assert not record.exists()


async def test_login_with_the_sendmail_helper(make_client, fake_sendmail, monkeypatch):
    program, record = fake_sendmail
    monkeypatch.setenv("SENDMAIL", str(program))
    client = await make_client(helper_email=SENDMAIL_HELPER)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "pw", email=EMAIL)
    await mark_validated(client, "shop", "email")
    login = {"json": {"scope": "all"}, "headers": basic("shop", "pw")}
    answer = await (await client.post("/instances/shop/private/token", **login)).json()
    [challenge] = answer["challenges"]
    sent = await client.post(
        f"/instances/shop/challenge/{challenge['challenge_id']}", json={}
    )
    assert sent.status == 200, await sent.text()
    tan = record.read_text().split(" is ")[1][:8]
    assert tan.isdigit()
    assert (await confirm(client, "shop", challenge["challenge_id"], tan)).status == 204
    headers = {**login["headers"], "Taler-Challenge-Ids": challenge["challenge_id"]}
    done = await client.post(
        "/instances/shop/private/token", json=login["json"], headers=headers
    )
    assert done.status == 200


# -- the runner ----------------------------------------------------------------------


async def test_runner_passes_address_and_message(tmp_path):
    out = tmp_path / "out"
    helper = tmp_path / "h.sh"
    helper.write_text(f'#!/bin/sh\nprintf "%s|" "$#" "$1" > {out}\ncat >> {out}\n')
    helper.chmod(0o755)
    await TanSender(2, 10).send(helper, "+41 79; rm -rf /", "text\n")
    assert out.read_text() == "1|+41 79; rm -rf /|text\n"


async def test_runner_hides_the_bootstrap_secret(tmp_path, monkeypatch):
    for name in BOOTSTRAP_VARIABLES:
        monkeypatch.setenv(name, "secret-token:Q7RZK2")
    monkeypatch.setenv("SOMETHING_ELSE", "visible")
    out = tmp_path / "env"
    helper = tmp_path / "h.sh"
    helper.write_text(f"#!/bin/sh\nenv > {out}\n")
    helper.chmod(0o755)
    await TanSender(1, 10).send(helper, EMAIL, "m")
    seen = out.read_text()
    assert "SOMETHING_ELSE=visible" in seen
    assert "Q7RZK2" not in seen


@pytest.mark.parametrize(
    "body", ["exit 3", "exec sleep 300", "kill -9 $$"], ids=["status", "hang", "killed"]
)
async def test_runner_failures(tmp_path, body):
    helper = tmp_path / "h.sh"
    helper.write_text(f"#!/bin/sh\n{body}\n")
    helper.chmod(0o755)
    with pytest.raises(DeliveryFailed):
        await asyncio.wait_for(TanSender(1, 0.5).send(helper, EMAIL, "m"), BOUND_S)


async def test_runner_bounds_the_wait_for_a_slot(tmp_path):
    helper = tmp_path / "h.sh"
    helper.write_text("#!/bin/sh\nexec sleep 300\n")
    helper.chmod(0o755)
    sender = TanSender(1, 0.5)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(sender.send(helper, EMAIL, "m") for _ in range(3)),
            return_exceptions=True,
        ),
        BOUND_S,
    )
    assert all(isinstance(r, DeliveryFailed) for r in results)


def test_masking_and_message():
    assert mask_address("sms", PHONE) == "***1234"
    assert mask_address("email", EMAIL) == "o***@shop.example"
    text = tan_message("shop", "01234567", 60)
    assert "01234567" in text and "shop" in text and "60 minutes" in text
