"""The ``merchant-authd`` command line: serve (the default) or run an admin command.

Admin commands open the configured database the way the daemon does and may run while
it serves: the database is in WAL mode and every connection waits for the other's
locks (busy timeout), so neither sees the other's writes half done.

Exit status: 0 done, 1 the operation failed (unknown instance, database trouble),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Coroutine, Sequence

from . import __version__, config, crypto
from . import log as logsetup
from .config import Settings
from .context import bootstrap_secret
from .errors import DatabaseError
from .sqlite_store import SqliteStore, schema_text, schema_version

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandFailed(Exception):
    """An admin command could not do its job; the message is for the operator."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        self.status = status
        super().__init__(message)


def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # Declared on the main parser and on every command, so that
    # "merchant-authd passwd admin -c FILE" works as well as "-c FILE passwd admin".
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="PATH",
        default=default,
        help="INI configuration file",
    )
    parser.add_argument(
        "-L",
        "--log-level",
        metavar="LEVEL",
        default=default,
        help="override [merchant-authd] LOG_LEVEL (DEBUG, INFO, WARNING, ERROR)",
    )


def _auth_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "-a",
        "--auth",
        metavar="secret-token:SECRET",
        default=default,
        help="admin bootstrap secret, valid until the admin instance has a password"
        " (prefer TALER_MERCHANT_TOKEN in the environment: arguments show in ps)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``merchant-authd`` and its commands."""
    parser = argparse.ArgumentParser(
        prog="merchant-authd",
        description="Authentication daemon for the GNU Taler merchant backend API."
        " Without a command it serves.",
    )
    _common_options(parser, None)
    _auth_option(parser, None)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=description)
        _common_options(sub, argparse.SUPPRESS)
        return sub

    serve = command("serve", "run the daemon (the default)", "Run the daemon.")
    _auth_option(serve, argparse.SUPPRESS)
    command(
        "dbinit",
        "create or upgrade the database schema",
        "Create the configured database, or bring its schema up to date.",
    )
    passwd = command(
        "passwd",
        "set the password of an instance",
        "Set the password of an existing instance and revoke its access tokens."
        " The password is read from the terminal, or as one line from standard"
        " input when that is not a terminal.",
    )
    passwd.add_argument("instance", metavar="INSTANCE", help="instance id")
    command(
        "instances",
        "list the instances",
        "List every instance: id, authentication method, whether it is deleted,"
        " e-mail address.",
    )
    tokens = command("tokens", "manage access tokens", "Manage access tokens.")
    actions = tokens.add_subparsers(dest="action", metavar="ACTION", required=True)
    revoke = actions.add_parser(
        "revoke",
        help="revoke every access token of an instance",
        description="Revoke every access token of an instance; prints how many.",
    )
    _common_options(revoke, argparse.SUPPRESS)
    revoke.add_argument("instance", metavar="INSTANCE", help="instance id")
    return parser


def fail(message: str, status: int = EXIT_USAGE) -> int:
    """Print a one-line error for the operator and return ``status``."""
    print(f"merchant-authd: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve or run the chosen command."""
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        return fail(str(exc))
    overrides: dict[str, Any] = {}
    if args.log_level:
        try:
            overrides["log_level"] = config.parse_log_level(args.log_level)
        except ValueError as exc:
            return fail(f"--log-level: {exc}")
    settings = replace(settings, **overrides)
    logsetup.setup(settings.log_level)
    if args.command in (None, "serve"):
        try:
            secret = bootstrap_secret(args.auth)
        except ValueError as exc:
            return fail(str(exc))
        from .server import run

        return run(settings, secret, overrides)
    if args.auth is not None:
        return fail("--auth only applies when serving")
    try:
        return asyncio.run(_COMMANDS[args.command](settings, args))
    except CommandFailed as exc:
        return fail(str(exc), exc.status)
    except DatabaseError as exc:
        return fail(f"database error: {exc}", EXIT_FAILED)
    except (sqlite3.Error, OSError) as exc:
        return fail(f"database {settings.database_path}: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_FAILED)


# -- commands -------------------------------------------------------------------------


def _check_owner(path: Path) -> None:
    # SQLite files that root creates next to a daemon's database (the WAL and its
    # index) would lock the daemon out of its own database.
    if os.geteuid() != 0 or not path.exists():
        return
    owner = path.stat().st_uid
    if owner != 0:
        raise CommandFailed(
            f"{path} belongs to uid {owner}; run this command as that user"
            " (for example with sudo -u merchant-authd)"
        )


async def _open(settings: Settings, *, create: bool = False) -> SqliteStore:
    path = settings.database_path
    _check_owner(path)
    if not create and not path.exists():
        raise CommandFailed(f"no database at {path} (run merchant-authd dbinit)")
    return await SqliteStore.open(path, create=create)


async def dbinit(settings: Settings, args: argparse.Namespace) -> int:
    """Create the database or upgrade its schema."""
    store = await _open(settings, create=True)
    await store.close()
    version = schema_version(schema_text())
    print(f"database {settings.database_path} is at schema version {version}")
    return EXIT_OK


def read_new_password(instance_id: str) -> str:
    """The new password: typed twice on a terminal, else one line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"New password for instance {instance_id}: ")
        again = getpass.getpass("Repeat the new password: ")
        if first != again:
            raise CommandFailed("the passwords differ; nothing changed")
        password = first
    else:
        line = sys.stdin.readline()
        if not line:
            raise CommandFailed("no password on standard input; nothing changed")
        password = line.rstrip("\r\n")
    if not password:
        raise CommandFailed("empty password refused; nothing changed")
    return password


async def passwd(settings: Settings, args: argparse.Namespace) -> int:
    """Set an instance's password; its access tokens are revoked with it."""
    store = await _open(settings)
    try:
        instance = await store.get_instance(args.instance)
        if instance is None or instance.deleted:
            raise CommandFailed(f"unknown instance {args.instance}")
        password = read_new_password(instance.id)
        password_hash = await crypto.hash_password(password, settings.bcrypt_cost)
        await store.set_auth(instance.serial, "token", password_hash)
    finally:
        await store.close()
    print(f"password of instance {instance.id} set, its access tokens revoked")
    return EXIT_OK


async def instances(settings: Settings, args: argparse.Namespace) -> int:
    """List the instances, one per line, in aligned columns."""
    store = await _open(settings)
    try:
        found = await store.list_instances()
    finally:
        await store.close()
    rows = [("ID", "AUTH", "DELETED", "EMAIL")]
    for instance in found:
        rows.append(
            (
                instance.id,
                instance.auth_method,
                "yes" if instance.deleted else "no",
                instance.email or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]))
    return EXIT_OK


async def tokens(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke every access token of an instance and say how many there were."""
    store = await _open(settings)
    try:
        instance = await store.get_instance(args.instance)
        if instance is None:
            raise CommandFailed(f"unknown instance {args.instance}")
        count = await store.revoke_all_tokens(instance.serial)
    finally:
        await store.close()
    noun = "token" if count == 1 else "tokens"
    print(f"revoked {count} access {noun} of instance {instance.id}")
    return EXIT_OK


_Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
_COMMANDS: dict[str, _Command] = {
    "dbinit": dbinit,
    "passwd": passwd,
    "instances": instances,
    "tokens": tokens,
}
