"""Delivery of TANs through the operator's helper programs.

A helper is run without a shell, with the address (phone number or e-mail address) as
its only argument and the message on standard input; exit status 0 means delivered.
At most a configured number of helpers run at once, each under a time limit after
which it is killed.  What a helper prints is never logged: it may echo the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

log = logging.getLogger("merchant_authd.tan")


class DeliveryFailed(Exception):
    """The helper could not be run, failed, or ran out of time."""


class TanSender:
    """Runs TAN helpers with a concurrency bound and a timeout."""

    def __init__(self, concurrency: int, timeout_s: float) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s

    async def send(self, helper: Path, address: str, message: str) -> None:
        """Deliver ``message`` to ``address``; raises :class:`DeliveryFailed`."""
        async with self._slots:
            try:
                process = await asyncio.create_subprocess_exec(
                    str(helper),
                    address,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                log.error("TAN helper %s could not be started: %s", helper, exc)
                raise DeliveryFailed(str(exc)) from exc
            try:
                await asyncio.wait_for(
                    process.communicate(message.encode("utf-8")), self._timeout_s
                )
            except asyncio.TimeoutError:
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
                log.error(
                    "TAN helper %s exited with status %s", helper, process.returncode
                )
                raise DeliveryFailed(f"exit status {process.returncode}")


def _kill(process: asyncio.subprocess.Process) -> None:
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
