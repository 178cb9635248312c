"""A listening UNIX socket's file: taking over a stale one, never a served one; its group.

Shared by the kpd-protocol socket (``ingest.server``) and the plain-lines socket
(``ingest.lines``). Stdlib only.
"""

from __future__ import annotations

import grp
import socket

__all__ = ["group_id", "refuse_if_served"]


def refuse_if_served(path: str) -> None:
    """A socket file someone still answers on is a running kpd: never steal it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return  # nobody listens: a dead daemon's leftover
    raise OSError(f"{path}: another process serves this socket (is kpd already running?)")


def group_id(group: str | int, setting: str = "socket.group") -> int:
    """The gid of a ``socket.group``-style setting (a name or a gid)."""
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise OSError(f"{setting}: no group named {group!r}") from None
