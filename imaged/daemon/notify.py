"""The systemd notify protocol (sd_notify(3)): datagrams to ``$NOTIFY_SOCKET``, no library."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Z][A-Z0-9_]*\Z")


def _address(value: str) -> str | None:
    """The socket address for a ``NOTIFY_SOCKET`` value; ``@name`` is the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def _encode(fields: Mapping[str, str]) -> bytes:
    lines = []
    for key, value in fields.items():
        if not _KEY.match(key):
            raise ValueError(f"invalid sd_notify field name {key!r}")
        # A newline in a value would start a new field: STATUS="a\nREADY=1" must not be READY.
        lines.append(f"{key}={' '.join(str(value).splitlines())}\n")
    return "".join(lines).encode()


class SystemdNotifier:
    """Tells systemd about readiness, reloads, status and watchdog pings.

    Without ``NOTIFY_SOCKET`` (not started by systemd with ``Type=notify``) every call is a
    no-op returning False. Send errors are logged once and swallowed.

    >>> notifier = SystemdNotifier.from_env()
    >>> notifier.ready(status="watching 3 images")  # doctest: +SKIP
    True
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.enabled = address is not None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        address = _address(value)
        if value and address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; notifications disabled", value)
        return cls(address)

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when it was sent."""
        message = _encode(fields)
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(READY="1")
        return self.notify(READY="1", STATUS=status)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def reloading(self) -> bool:
        """RELOADING=1 with the monotonic timestamp ``Type=notify-reload`` (systemd 253) wants."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING="1", MONOTONIC_USEC=str(usec))

    def stopping(self) -> bool:
        return self.notify(STOPPING="1")

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")

    def watchdog_interval(self, environ: Mapping[str, str] | None = None) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), None when not asked."""
        env = os.environ if environ is None else environ
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
            pid = int(env["WATCHDOG_PID"]) if env.get("WATCHDOG_PID") else os.getpid()
        except ValueError:
            return None
        if usec <= 0 or pid != os.getpid():
            return None
        return usec / 2 / 1_000_000
