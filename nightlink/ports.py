"""Whether a server can listen where it is told to, asked before it starts: a port another
program holds does not go away by retrying, so it is one sentence and exit code 2."""

from __future__ import annotations

import errno
import socket

from nightlink.errors import NightlinkError


def check_listen(host: str, port: int, *, what: str, in_use: str, privileged: str) -> None:
    """NightlinkError if `host:port` cannot be bound now. `what` names the port in the
    messages (e.g. "Port 8000 on 127.0.0.1"); `in_use` and `privileged` end the sentences
    for a port in use and one below 1024 (what the user should do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except socket.gaierror:
        raise NightlinkError(f"{what} cannot be used: the address {host!r} is unknown.") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise NightlinkError(f"{what} is in use; {in_use}.") from None
        if exc.errno == errno.EACCES:
            raise NightlinkError(f"{what} needs privileges; {privileged}.") from None
        raise NightlinkError(f"{what} cannot be used ({exc.strerror or exc}).") from None
