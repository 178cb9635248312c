"""The socket and process settings operators set: connection limit, group, affinity, and the
socket file's lifecycle."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from kpd import protocol as wire
from kpd.protocol.base import AckLevel, KpdErrorCode
from tests.daemon_harness import KpdDaemon, wait_for


class _Client:
    """A raw protocol client: one socket, one decoder (it tracks the handshake state)."""

    def __init__(self, path: str, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.settimeout(10)
        self.decoder = wire.FrameDecoder(wire.Role.CLIENT)
        if hello:
            self.sock.sendall(wire.encode_hello(1, 1, AckLevel.KAFKA, "socket-test"))

    def next_frame(self):
        while True:
            data = self.sock.recv(65536)
            assert data, "kpd closed the connection without a frame"
            frames = self.decoder.feed(data)
            if frames:
                return frames[0]


def test_connections_past_max_connections_get_an_error_and_the_others_keep_working(tansu, tmp_path):
    extra = {"socket": {"max_connections": 2}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=extra) as daemon:
        first, second = _Client(daemon.socket_path), _Client(daemon.socket_path)
        assert first.next_frame().type == wire.FrameType.WELCOME
        assert second.next_frame().type == wire.FrameType.WELCOME
        third = _Client(daemon.socket_path, hello=False)
        frame = third.next_frame()
        assert frame.type == wire.FrameType.ERROR
        (code,) = struct.unpack_from(">H", frame.payload, 0)
        assert code == KpdErrorCode.TOO_MANY_CONNECTIONS
        first.sock.sendall(wire.encode_ping(7))
        assert wire.decode_pong(first.next_frame().payload) == 7
        for client in (first, second, third):
            client.sock.close()


def test_socket_group_affinity_and_the_socket_file_removed_on_exit(tansu, tmp_path):
    gid = 12345  # root may give the socket any group; a number needs no /etc/group entry
    extra = {"socket": {"group": gid}, "workers": {"cpu_affinity": True}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=extra) as daemon:
        assert os.stat(daemon.socket_path).st_gid == gid
        cpus = sorted(os.sched_getaffinity(0))
        expected = sorted(cpus[i % len(cpus)] for i in range(2))

        def pinned() -> bool:  # workers pin themselves as they boot
            sets = [os.sched_getaffinity(pid) for pid in daemon.child_pids("worker")]
            return (
                len(sets) == 2
                and sorted(min(s) for s in sets) == expected
                and all(len(s) == 1 for s in sets)
            )

        wait_for(pinned, 20, "each worker pinned to its own CPU")
        assert daemon.stop() == 0
    assert not Path(daemon.socket_path).exists()
