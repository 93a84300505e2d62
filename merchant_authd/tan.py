"""Delivery of TANs through the operator's helper programs.

A helper is run without a shell, with the address (phone number or e-mail address) as
its only argument and the message on standard input; exit status 0 means delivered.
At most a configured number of helpers run at once; waiting for a free slot and
running are each limited by the helper timeout, after which the helper (with every
process it started) is killed, so a delivery never takes longer than twice the
timeout.  What a helper prints is never logged: it may echo the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Iterator

log = logging.getLogger("merchant_authd.tan")


class DeliveryFailed(Exception):
    """The helper could not be run, failed, or ran out of time."""


class DeliveryBusy(Exception):
    """A TAN for the same challenge is being delivered right now."""


def helper_environment() -> dict[str, str]:
    """The daemon's environment without the admin bootstrap secret: a helper has no
    use for it."""
    # Imported here: the context module builds a TanSender, so it imports this one.
    from .context import BOOTSTRAP_VARIABLES

    return {k: v for k, v in os.environ.items() if k not in BOOTSTRAP_VARIABLES}


class TanSender:
    """Runs TAN helpers with a concurrency bound and a timeout."""

    def __init__(self, concurrency: int, timeout_s: float) -> None:
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s
        self._pending: set[object] = set()

    def reconfigure(self, concurrency: int, timeout_s: float) -> None:
        """Apply re-read settings; deliveries under way keep their slots."""
        self._timeout_s = timeout_s
        if concurrency != self._concurrency:
            self._concurrency = concurrency
            self._slots = asyncio.Semaphore(concurrency)

    @contextlib.contextmanager
    def exclusive(self, key: object) -> Iterator[None]:
        """Hold ``key`` while delivering; raises :class:`DeliveryBusy` if taken.

        Two concurrent requests for one challenge would otherwise both deliver a TAN
        although only one of them can be stored.
        """
        if key in self._pending:
            raise DeliveryBusy()
        self._pending.add(key)
        try:
            yield
        finally:
            self._pending.discard(key)

    async def send(self, helper: Path, address: str, message: str) -> None:
        """Deliver ``message`` to ``address``; raises :class:`DeliveryFailed`."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            log.error("no free slot to run TAN helper %s in time", helper)
            raise DeliveryFailed("busy") from None
        try:
            await self._run(helper, address, message)
        finally:
            self._slots.release()

    async def _run(self, helper: Path, address: str, message: str) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                str(helper),
                address,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=helper_environment(),
                start_new_session=True,
            )
        except OSError as exc:
            log.error(
                "TAN helper %s could not be started: %s", helper, exc.strerror or exc
            )
            raise DeliveryFailed("not started") from None
        except ValueError:
            # An argument the system cannot pass, such as one with a NUL in it (an
            # address stored before addresses were checked for that).
            log.error("TAN helper %s could not be started: unusable address", helper)
            raise DeliveryFailed("not started") from None
        try:
            await asyncio.wait_for(
                process.communicate(message.encode("utf-8")), self._timeout_s
            )
        except TimeoutError:
            _kill(process)
            await process.wait()
            log.error("TAN helper %s timed out and was killed", helper)
            raise DeliveryFailed("timeout") from None
        except asyncio.CancelledError:
            _kill(process)
            raise
        except (BrokenPipeError, ConnectionResetError):
            await process.wait()
        if process.returncode != 0:
            log.error("TAN helper %s exited with status %s", helper, process.returncode)
            raise DeliveryFailed(f"exit status {process.returncode}")


def _kill(process: asyncio.subprocess.Process) -> None:
    # The helper leads its own process group (start_new_session), so whatever it
    # started (a sendmail, a sleep in a shell script) is killed along with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def mask_address(channel: str, address: str) -> str:
    """A display hint of where a TAN goes, not the whole address."""
    if channel == "sms":
        return "***" + address[-4:]
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def tan_message(instance_id: str, tan: str, valid_minutes: int) -> str:
    """The text sent to the merchant with the TAN in it."""
    return (
        f"Your TAN for merchant instance {instance_id} is {tan}.\n"
        f"It is valid for {valid_minutes} minutes. If you did not ask for it,"
        " ignore this message.\n"
    )
