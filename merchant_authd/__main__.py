"""The ``merchant-authd`` command: run the daemon (the default) or an admin command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from . import __version__, config, log as logsetup
from .context import bootstrap_secret


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="merchant-authd",
        description="Authentication daemon for the GNU Taler merchant backend API.",
    )
    parser.add_argument(
        "-c", "--config", type=Path, metavar="PATH", help="INI configuration file"
    )
    parser.add_argument(
        "-a",
        "--auth",
        metavar="secret-token:SECRET",
        help="admin bootstrap secret, valid until the admin instance has a password"
        " (prefer TALER_MERCHANT_TOKEN in the environment: arguments show in ps)",
    )
    parser.add_argument(
        "-L", "--log-level", metavar="LEVEL", help="override [merchant-authd] LOG_LEVEL"
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def fail(message: str, status: int = 2) -> int:
    """Print a one-line error for the operator and return ``status``."""
    print(f"merchant-authd: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run."""
    args = _parser().parse_args(argv)
    try:
        settings = config.load(args.config)
        if args.log_level:
            settings = config.replace(
                settings, log_level=config.parse_log_level(args.log_level)
            )
    except config.ConfigError as exc:
        return fail(str(exc))
    except ValueError as exc:
        return fail(f"--log-level: {exc}")
    try:
        secret = bootstrap_secret(args.auth)
    except ValueError as exc:
        return fail(str(exc))
    logsetup.setup(settings.log_level)
    from .server import run

    return run(settings, secret)


if __name__ == "__main__":
    sys.exit(main())
