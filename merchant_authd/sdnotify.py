"""The systemd readiness protocol: datagrams to the socket in ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (such as ``READY=1``) to systemd; False when not under it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
        ) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
