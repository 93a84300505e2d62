"""The configuration loader: bad values and options are refused, naming
``[section] OPTION``.

Also checks that the example file and the README's reference table are generated from
the one option table, and that the console script reports a bad file in one line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from merchant_authd import config
from merchant_authd.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".venv" / "bin" / "merchant-authd"
README_BEGIN = "<!-- BEGIN CONFIG REFERENCE"
README_END = "<!-- END CONFIG REFERENCE -->"


def write_conf(tmp_path: Path, text: str) -> Path:
    """A configuration file holding ``text``."""
    path = tmp_path / "authd.conf"
    path.write_text(text, encoding="utf-8")
    return path


# (file text, section, option) of configurations the loader must refuse.
BAD_CONFIGS = [
    ("[merchant]\nBIND_TO = not an addr\n", "merchant", "BIND_TO"),
    ("[merchant]\nBIND_TO = 999.1.1.1\n", "merchant", "BIND_TO"),
    ("[merchant]\nCURRENCY =\n", "merchant", "CURRENCY"),
    ("[merchant]\nCURRENCY = 12 34\n", "merchant", "CURRENCY"),
    ("[merchant]\nPORT = abc\n", "merchant", "PORT"),
    ("[merchant]\nPORT = 70000\n", "merchant", "PORT"),
    ("[merchant]\nPORT = -1\n", "merchant", "PORT"),
    ("[merchant]\nSERVE = udp\n", "merchant", "SERVE"),
    ("[merchant]\nSERVE = unix\n", "merchant", "UNIXPATH"),
    ("[merchant]\nUNIXPATH_MODE = 999\n", "merchant", "UNIXPATH_MODE"),
    (
        "[merchant]\nMANDATORY_TAN_CHANNELS = fax\n",
        "merchant",
        "MANDATORY_TAN_CHANNELS",
    ),
    ("[merchant]\nMANDATORY_TAN_CHANNELS = email\n", "merchant", "HELPER_EMAIL"),
    ("[merchant]\nMANDATORY_TAN_CHANNELS = sms\n", "merchant", "HELPER_SMS"),
    (
        "[merchant]\nMANDATORY_TAN_CHANNELS = sms email\nHELPER_SMS = /bin/true\n",
        "merchant",
        "HELPER_EMAIL",
    ),
    (
        "[merchant]\nENABLE_SELF_PROVISIONING = maybe\n",
        "merchant",
        "ENABLE_SELF_PROVISIONING",
    ),
    ("[merchant]\nCOLOUR = blue\n", "merchant", "COLOUR"),
    ("[merchantdb-sqlite]\nCONFIG = x\n", "merchantdb-sqlite", "CONFIG"),
    ("[merchant-authd]\nBODY_LIMIT = 1 TB\n", "merchant-authd", "BODY_LIMIT"),
    ("[merchant-authd]\nBODY_LIMIT = 10\n", "merchant-authd", "BODY_LIMIT"),
    ("[merchant-authd]\nBCRYPT_COST = 99\n", "merchant-authd", "BCRYPT_COST"),
    ("[merchant-authd]\nBCRYPT_COST = 3\n", "merchant-authd", "BCRYPT_COST"),
    (
        "[merchant-authd]\nMAX_TOKEN_DURATION = soon\n",
        "merchant-authd",
        "MAX_TOKEN_DURATION",
    ),
    (
        "[merchant-authd]\nDEFAULT_TOKEN_DURATION = forever\n",
        "merchant-authd",
        "DEFAULT_TOKEN_DURATION",
    ),
    (
        "[merchant-authd]\nTHROTTLE_BASE_DELAY = 5\n",
        "merchant-authd",
        "THROTTLE_BASE_DELAY",
    ),
    ("[merchant-authd]\nLOG_LEVEL = LOUD\n", "merchant-authd", "LOG_LEVEL"),
    ("[merchant-authd]\nTAN_MAX_ACTIVE = 0\n", "merchant-authd", "TAN_MAX_ACTIVE"),
    ("[merchant-authd]\nSECRET = x\n", "merchant-authd", "SECRET"),
    ("[MERCHANT]\nPORT = abc\n", "merchant", "PORT"),
]


@pytest.mark.parametrize(("text", "section", "option"), BAD_CONFIGS)
def test_bad_configuration_names_section_and_option(
    tmp_path: Path, text: str, section: str, option: str
) -> None:
    path = write_conf(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert (caught.value.section, caught.value.option) == (section, option)
    assert str(caught.value).startswith(f"[{section}] {option}: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.conf"
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.section == "file"
    assert caught.value.option == str(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "PORT = 1\n",  # option before any section
        "[merchant\nPORT = 1\n",  # unterminated section header
        "[merchant]\nPORT = 1\nPORT = 2\n",  # duplicate option
        "[merchant]\n[merchant]\n",  # duplicate section
        "[merchant]\nthis line has no equals sign\n",
    ],
)
def test_syntax_error(tmp_path: Path, text: str) -> None:
    path = write_conf(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.section == "file"
    assert str(caught.value).startswith(f"[file] {path}: ")
    assert "\n" not in str(caught.value)


def test_foreign_sections_are_ignored(tmp_path: Path) -> None:
    text = "[exchange]\nWHATEVER = 1\n[merchantdb-postgres]\nCONFIG = x\n"
    assert config.load(write_conf(tmp_path, text)) == config.defaults()


def test_values_are_parsed(tmp_path: Path) -> None:
    text = (
        "[merchant]\n"
        "SERVE = unix\nUNIXPATH = /run/authd.sock\nUNIXPATH_MODE = 600\n"
        "PORT = 8080\nCURRENCY = EUR\n"
        "HELPER_EMAIL = /usr/bin/mailer\nMANDATORY_TAN_CHANNELS = email, email\n"
        "ENABLE_SELF_PROVISIONING = yes\n"
        "[merchantdb-sqlite]\nDATABASE = /var/lib/authd/db.sqlite3\n"
        "[merchant-authd]\nBODY_LIMIT = 64 KiB\nBCRYPT_COST = 10\n"
        "DEFAULT_TOKEN_DURATION = 2 h\nMAX_TOKEN_DURATION = 1 week 30 s\n"
        "LOG_LEVEL = debug\n"
    )
    settings = config.load(write_conf(tmp_path, text))
    assert settings.serve == "unix"
    assert settings.unixpath == Path("/run/authd.sock")
    assert settings.unixpath_mode == 0o600
    assert settings.port == 8080
    assert settings.currency == "EUR"
    assert settings.helper_email == Path("/usr/bin/mailer")
    assert settings.mandatory_tan_channels == ("email",)
    assert settings.self_provisioning is True
    assert settings.database_path == Path("/var/lib/authd/db.sqlite3")
    assert settings.body_limit == 64 * 1024
    assert settings.bcrypt_cost == 10
    assert settings.default_token_duration == 2 * 3600 * 10**6
    assert settings.max_token_duration == (7 * 86400 + 30) * 10**6
    assert settings.log_level == "DEBUG"


def test_example_file_is_generated_and_loads_to_defaults() -> None:
    example = REPO / "merchant-authd.conf"
    assert example.read_text(encoding="utf-8") == config.example()
    assert config.load(example) == config.defaults()


def test_readme_holds_the_reference() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    begin = readme.index(README_BEGIN)
    end = readme.index(README_END)
    block = readme[readme.index("\n", begin) + 1 : end]
    assert block.strip() == config.reference()


def test_default_database_follows_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    expected = tmp_path / "merchant-authd" / "merchant-authd.sqlite3"
    assert config.defaults().database_path == expected
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'state'}:/elsewhere")
    expected = tmp_path / "state" / "merchant-authd.sqlite3"
    assert config.defaults().database_path == expected


# -- the console script ---------------------------------------------------------------


def run_script(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run ``merchant-authd`` with a private HOME, bounded in time."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TALER_MERCHANT_TOKEN", "TALER_MERCHANT_PASSWORD")
    }
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"))
    env.pop("STATE_DIRECTORY", None)
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[merchant]\nPORT = abc\n", "[merchant] PORT"),
        ("[merchant-authd]\nBCRYPT_COST = 99\n", "[merchant-authd] BCRYPT_COST"),
        ("[merchantdb-sqlite]\nUNKNOWN = 1\n", "[merchantdb-sqlite] UNKNOWN"),
        ("[merchant]\nSERVE = unix\n", "[merchant] UNIXPATH"),
        ("[merchant\n", "[file] "),
    ],
)
def test_script_rejects_bad_file(tmp_path: Path, text: str, named: str) -> None:
    path = write_conf(tmp_path, text)
    result = run_script("-c", str(path), home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_script_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.conf"
    path.write_bytes(b"[merchant]\n\xff\xfe = 1\n")
    result = run_script("-c", str(path), home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"[file] {path}" in lines[0]
    assert "Traceback" not in result.stderr


def test_script_rejects_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.conf"
    result = run_script("-c", str(path), home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"[file] {path}" in lines[0]


def test_script_rejects_auth_without_prefix(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "[merchant]\nPORT = 1\n")
    result = run_script("-c", str(path), "--auth", "plain", home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "secret-token:" in lines[0]
    assert "plain" not in lines[0]


def test_script_rejects_bad_log_level(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "[merchant]\nPORT = 1\n")
    result = run_script("-c", str(path), "-L", "LOUD", home=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
