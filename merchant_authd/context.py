"""The daemon's long-lived services, built once at start-up and shared by handlers."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from . import crypto
from .config import Settings
from .store import Store
from .tan import TanSender
from .throttle import AttemptLimiter, PasswordThrottle

log = logging.getLogger("merchant_authd")

#: TAN transmissions allowed per challenge (a day) and per client address (an hour).
SENDS_PER_CHALLENGE = 5
SENDS_PER_ADDRESS = 30

#: Environment variables that may carry the admin bootstrap secret.
BOOTSTRAP_VARIABLES = ("TALER_MERCHANT_TOKEN", "TALER_MERCHANT_PASSWORD")


@dataclass
class Context:
    """Settings, storage and the helpers built on them."""

    settings: Settings
    store: Store
    bootstrap_secret: str | None = field(default=None, repr=False)
    decoy_hash: str = field(default="", repr=False)  # see crypto.check_password
    throttle: PasswordThrottle = field(init=False)
    signups: AttemptLimiter = field(init=False)
    password_resets: AttemptLimiter = field(init=False)
    sends_per_challenge: AttemptLimiter = field(init=False)
    sends_per_address: AttemptLimiter = field(init=False)
    tan_sender: TanSender = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.throttle = PasswordThrottle(self.store, settings)
        self.signups = AttemptLimiter(self.store, "signup", settings.signup_limit)
        self.password_resets = AttemptLimiter(
            self.store, "forgot-password", settings.signup_limit
        )
        self.sends_per_challenge = AttemptLimiter(
            self.store, "tan-send/challenge", SENDS_PER_CHALLENGE, 86_400.0
        )
        self.sends_per_address = AttemptLimiter(
            self.store, "tan-send/address", SENDS_PER_ADDRESS
        )
        self.tan_sender = TanSender(
            settings.helper_concurrency, settings.helper_timeout / 1e6
        )

    def reconfigure(self, settings: Settings) -> None:
        """Use re-read settings (SIGHUP).  The throttle, limiters and TAN sender stay
        the same objects, so their in-flight state survives a reload."""
        self.settings = settings
        self.throttle.reconfigure(settings)
        self.signups.limit = settings.signup_limit
        self.password_resets.limit = settings.signup_limit
        self.tan_sender.reconfigure(
            settings.helper_concurrency, settings.helper_timeout / 1e6
        )


def bootstrap_secret(cli_value: str | None) -> str | None:
    """The admin bootstrap secret from ``--auth`` or the environment, without prefix.

    ``--auth`` must carry the ``secret-token:`` prefix; the environment variables may
    carry it or not.
    """
    if cli_value is not None:
        if not cli_value.startswith(crypto.TOKEN_PREFIX):
            raise ValueError("--auth must start with secret-token:")
        value = cli_value[len(crypto.TOKEN_PREFIX) :]
        if not value:
            raise ValueError("--auth needs a secret after secret-token:")
    else:
        value = next(
            (os.environ[v] for v in BOOTSTRAP_VARIABLES if os.environ.get(v)), ""
        )
        if value.startswith(crypto.TOKEN_PREFIX):
            value = value[len(crypto.TOKEN_PREFIX) :]
    return value or None
