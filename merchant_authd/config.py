"""Configuration: every option declared once, read from a Taler-style INI file.

Sections and option names follow GNU Taler's merchant configuration (``[merchant]``,
``[merchantdb-sqlite]``); what only this daemon needs lives in ``[merchant-authd]``.
Values are validated when the file is read, so a running daemon never meets a bad one.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

#: Sections whose options this daemon reads; an unknown option in them is an error.
OWNED_SECTIONS = ("merchant", "merchantdb-sqlite", "merchant-authd")

#: Stand-in for "no upper bound" in durations (microseconds), as in ``"forever"``.
FOREVER: int | None = None


class ConfigError(Exception):
    """A configuration value that cannot be used; names ``[section] OPTION``."""

    def __init__(self, section: str, option: str, message: str) -> None:
        self.section = section
        self.option = option
        super().__init__(f"[{section}] {option}: {message}")


def default_data_dir() -> Path:
    """Where the database lives when the configuration does not say.

    systemd's ``StateDirectory=`` wins; otherwise the XDG data folder of the user.
    """
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(xdg) / "merchant-authd"


# -- value parsers: each takes the raw text and returns the typed value ---------------


def parse_bool(text: str) -> bool:
    value = text.strip().upper()
    if value in ("YES", "TRUE", "ON", "1"):
        return True
    if value in ("NO", "FALSE", "OFF", "0"):
        return False
    raise ValueError("expected YES or NO")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip(), 10)
        if not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return value

    return parse


def parse_octal_mode(text: str) -> int:
    value = int(text.strip(), 8)
    if not 0 <= value <= 0o777:
        raise ValueError("expected an octal file mode such as 660")
    return value


_UNITS_US = {
    "us": 1,
    "ms": 1000,
    "s": 1_000_000,
    "second": 1_000_000,
    "seconds": 1_000_000,
    "min": 60_000_000,
    "minute": 60_000_000,
    "minutes": 60_000_000,
    "h": 3_600_000_000,
    "hour": 3_600_000_000,
    "hours": 3_600_000_000,
    "d": 86_400_000_000,
    "day": 86_400_000_000,
    "days": 86_400_000_000,
    "week": 604_800_000_000,
    "weeks": 604_800_000_000,
}
_DURATION = re.compile(r"\s*(\d+)\s*([a-z]+)\s*")


def parse_duration(text: str) -> int | None:
    """A GNUnet-style relative time such as ``1 d``, ``90 s`` or ``forever``.

    Returns microseconds, or ``None`` for ``forever``.
    """
    value = text.strip().lower()
    if value == "forever":
        return FOREVER
    total = 0
    pos = 0
    while pos < len(value):
        match = _DURATION.match(value, pos)
        if not match or match.group(2) not in _UNITS_US:
            raise ValueError("expected a duration such as '1 d', '30 s' or 'forever'")
        total += int(match.group(1)) * _UNITS_US[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError("expected a duration such as '1 d', '30 s' or 'forever'")
    return total


def parse_finite_duration(text: str) -> int:
    value = parse_duration(text)
    if value is None:
        raise ValueError("'forever' is not allowed here")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size such as '1 MiB' or '65536'")
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if value < 1024:
        raise ValueError("must be at least 1024 bytes")
    return value


def parse_channels(text: str) -> tuple[str, ...]:
    channels = tuple(dict.fromkeys(text.replace(",", " ").lower().split()))
    for channel in channels:
        if channel not in ("sms", "email"):
            raise ValueError(f"unknown TAN channel {channel!r} (use sms, email)")
    return channels


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return value

    return parse


def parse_text(text: str) -> str:
    return text.strip()


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*"
)


def parse_host(text: str) -> str:
    """An IP address or a host name to listen on."""
    value = text.strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value) or value.replace(".", "").isdigit():
            raise ValueError("expected an IP address or a host name") from None
    return value


def parse_currency(text: str) -> str:
    """A Taler currency name: 1 to 11 letters."""
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z]{1,11}", value):
        raise ValueError("expected a currency name of 1 to 11 letters, such as EUR")
    return value.upper()


def parse_path(text: str) -> Path:
    value = os.path.expandvars(os.path.expanduser(text.strip()))
    if not value:
        raise ValueError("expected a file name")
    return Path(value)


def parse_optional_path(text: str) -> Path | None:
    return parse_path(text) if text.strip() else None


def parse_log_level(text: str) -> str:
    value = text.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return value


@dataclass(frozen=True)
class Option:
    """One INI option: where it lives, how it is parsed, its default and meaning."""

    section: str
    name: str
    attr: str
    parse: Callable[[str], Any]
    default: str
    help: str


# fmt: off
OPTIONS: tuple[Option, ...] = (
    Option("merchant", "SERVE", "serve", _choice("tcp", "unix"), "tcp",
           "Listen on a TCP port (tcp) or a UNIX domain socket (unix)."),
    Option("merchant", "PORT", "port", _int_range(0, 65535), "9966",
           "TCP port to listen on when SERVE = tcp."),
    Option("merchant", "BIND_TO", "bind_to", parse_host, "127.0.0.1",
           "Address to listen on when SERVE = tcp."),
    Option("merchant", "UNIXPATH", "unixpath", parse_optional_path, "",
           "Socket file when SERVE = unix."),
    Option("merchant", "UNIXPATH_MODE", "unixpath_mode", parse_octal_mode, "660",
           "Octal permissions of the socket file."),
    Option("merchant", "CURRENCY", "currency", parse_currency, "KUDOS",
           "Default currency reported by GET /config."),
    Option("merchant", "HELPER_SMS", "helper_sms", parse_optional_path, "",
           "Program that delivers a TAN by SMS (phone number as argument, "
           "message on standard input). Empty: no SMS channel."),
    Option("merchant", "HELPER_EMAIL", "helper_email", parse_optional_path, "",
           "Program that delivers a TAN by e-mail (address as argument, "
           "message on standard input). Empty: no e-mail channel."),
    Option("merchant", "MANDATORY_TAN_CHANNELS", "mandatory_tan_channels",
           parse_channels, "",
           "TAN channels (sms, email) every instance must validate and use."),
    Option("merchant", "ENABLE_SELF_PROVISIONING", "self_provisioning", parse_bool,
           "NO", "Allow public sign-up with POST /instances."),
    Option("merchantdb-sqlite", "DATABASE", "database", parse_optional_path, "",
           "SQLite database file. Empty: merchant-authd.sqlite3 in the data folder "
           "($STATE_DIRECTORY, else $XDG_DATA_HOME/merchant-authd)."),
    Option("merchant-authd", "BODY_LIMIT", "body_limit", parse_size, "1 MiB",
           "Largest accepted request body, measured after decompression."),
    Option("merchant-authd", "BCRYPT_COST", "bcrypt_cost", _int_range(4, 31), "12",
           "bcrypt work factor for new password hashes."),
    Option("merchant-authd", "DEFAULT_TOKEN_DURATION", "default_token_duration",
           parse_finite_duration, "1 d",
           "Lifetime of an access token whose request names no duration."),
    Option("merchant-authd", "MAX_TOKEN_DURATION", "max_token_duration",
           parse_duration, "forever",
           "Longest access token lifetime; longer requests are shortened."),
    Option("merchant-authd", "THROTTLE_FREE_ATTEMPTS", "throttle_free_attempts",
           _int_range(1, 1000), "5",
           "Failed password checks per client address before back-off starts "
           "(an instance as a whole gets four times as many)."),
    Option("merchant-authd", "THROTTLE_BASE_DELAY", "throttle_base_delay",
           parse_finite_duration, "1 s",
           "First back-off delay; it doubles with each further failure."),
    Option("merchant-authd", "THROTTLE_MAX_DELAY", "throttle_max_delay",
           parse_finite_duration, "15 min", "Longest back-off delay."),
    Option("merchant-authd", "TAN_SOLVE_TIME", "tan_solve_time",
           parse_finite_duration, "1 h", "How long a transmitted TAN can be entered."),
    Option("merchant-authd", "TAN_RETRANSMISSION", "tan_retransmission",
           parse_finite_duration, "60 s", "Minimum time between two TAN deliveries."),
    Option("merchant-authd", "TAN_MAX_ACTIVE", "tan_max_active", _int_range(1, 1000),
           "10", "Most unsolved challenges an instance may have at once for one "
           "kind of operation (logins, password changes, resets, ...)."),
    Option("merchant-authd", "HELPER_TIMEOUT", "helper_timeout",
           parse_finite_duration, "30 s",
           "Time a TAN helper may run before it is killed."),
    Option("merchant-authd", "HELPER_CONCURRENCY", "helper_concurrency",
           _int_range(1, 256), "4", "TAN helpers that may run at the same time."),
    Option("merchant-authd", "SIGNUP_LIMIT", "signup_limit", _int_range(1, 100000),
           "5", "Sign-ups (self-provisioning) and forgot-password requests that "
           "send TANs, each allowed this often per client address per hour."),
    Option("merchant-authd", "LOG_LEVEL", "log_level", parse_log_level, "INFO",
           "DEBUG, INFO, WARNING or ERROR."),
)
# fmt: on


@dataclass(frozen=True)
class Settings:
    """The parsed configuration; built only through :func:`load` or :func:`defaults`."""

    serve: str
    port: int
    bind_to: str
    unixpath: Path | None
    unixpath_mode: int
    currency: str
    helper_sms: Path | None
    helper_email: Path | None
    mandatory_tan_channels: tuple[str, ...]
    self_provisioning: bool
    database: Path | None
    body_limit: int
    bcrypt_cost: int
    default_token_duration: int
    max_token_duration: int | None
    throttle_free_attempts: int
    throttle_base_delay: int
    throttle_max_delay: int
    tan_solve_time: int
    tan_retransmission: int
    tan_max_active: int
    helper_timeout: int
    helper_concurrency: int
    signup_limit: int
    log_level: str
    source: Path | None = field(default=None, compare=False)

    @property
    def database_path(self) -> Path:
        """The database file, with the default data folder filled in."""
        return self.database or default_data_dir() / "merchant-authd.sqlite3"

    def helper_for(self, channel: str) -> Path | None:
        """The delivery program of a TAN channel, if one is configured."""
        return self.helper_sms if channel == "sms" else self.helper_email


def _build(values: dict[tuple[str, str], str], source: Path | None) -> Settings:
    kwargs: dict[str, Any] = {}
    for option in OPTIONS:
        raw = values.get((option.section, option.name.lower()), option.default)
        try:
            kwargs[option.attr] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(option.section, option.name, str(exc)) from None
    settings = Settings(source=source, **kwargs)
    if settings.serve == "unix" and settings.unixpath is None:
        raise ConfigError("merchant", "UNIXPATH", "required when SERVE = unix")
    for channel in settings.mandatory_tan_channels:
        if settings.helper_for(channel) is None:
            name = "HELPER_SMS" if channel == "sms" else "HELPER_EMAIL"
            raise ConfigError(
                "merchant", name, f"required because channel {channel} is mandatory"
            )
    return settings


def defaults(**overrides: Any) -> Settings:
    """Settings with every option at its default, some replaced (tests, tools)."""
    return replace(_build({}, None), **overrides)


def load(path: Path | None) -> Settings:
    """Read and validate the configuration file (``None``: all defaults)."""
    if path is None:
        return _build({}, None)
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str.lower  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError("file", str(path), exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise ConfigError("file", str(path), "not UTF-8 text") from None
    except configparser.Error as exc:
        message = str(exc).splitlines()[0]
        raise ConfigError("file", str(path), message) from None
    known = {(o.section, o.name.lower()) for o in OPTIONS}
    values: dict[tuple[str, str], str] = {}
    for section in parser.sections():
        owned = section.lower()
        if owned not in OWNED_SECTIONS:
            continue
        for name, raw in parser.items(section):
            if (owned, name) not in known:
                raise ConfigError(owned, name.upper(), "unknown option")
            values[(owned, name)] = raw
    return _build(values, Path(path))


def reference(options: Iterable[Option] = OPTIONS) -> str:
    """The configuration reference as a Markdown table (used by the README)."""
    lines = ["| Section | Option | Default | Meaning |", "|---|---|---|---|"]
    for option in options:
        default = f"`{option.default}`" if option.default else "(empty)"
        lines.append(
            f"| `[{option.section}]` | `{option.name}` | {default} | {option.help} |"
        )
    return "\n".join(lines)


def example(options: Iterable[Option] = OPTIONS) -> str:
    """An INI file listing every option, commented out at its default."""
    out = [
        "# merchant-authd configuration.  Every option is shown at its default;",
        "# remove the '#' in front of an option to change it.",
    ]
    section = None
    for option in options:
        if option.section != section:
            section = option.section
            out += ["", f"[{section}]"]
        out += [
            "",
            *(f"# {line}" for line in _wrap(option.help)),
            f"#{option.name} = {option.default}",
        ]
    return "\n".join(out) + "\n"


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 78)
