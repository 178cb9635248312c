"""The real daemon under systemd: sd_notify over a NOTIFY_SOCKET datagram socket, and its log
format. (SIGHUP reloads: test_daemon_config_by_value.py.)"""

from __future__ import annotations

import json
import socket

from tests.daemon_harness import KpdDaemon, wait_for


def _datagrams(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_supervisor_notifies_ready_watchdog_then_stopping_in_order(tansu, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.setblocking(False)
        daemon = KpdDaemon(tmp_path, tansu.bootstrap, workers=1)
        # WatchdogSec=1s: the supervisor beats every half period while its children are healthy.
        daemon.start(env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000"})
        seen: list[str] = []

        def watchdog_seen() -> bool:
            seen.extend(_datagrams(notify))
            return any("WATCHDOG=1" in d for d in seen)

        wait_for(watchdog_seen, 10, "a WATCHDOG=1 datagram")
        assert daemon.stop() == 0
        seen.extend(_datagrams(notify))
    kinds = []
    for datagram in seen:
        for field in ("READY=1", "WATCHDOG=1", "STOPPING=1"):
            if field in datagram.split("\n") and (not kinds or kinds[-1] != field):
                kinds.append(field)
    assert kinds[:3] == ["READY=1", "WATCHDOG=1", "STOPPING=1"], seen
    assert any(d.startswith("READY=1") and "STATUS=serving" in d for d in seen), seen


def test_json_log_format_writes_one_json_object_per_line(tansu, tmp_path):
    extra = {"log": {"format": "json"}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=extra) as daemon:
        assert daemon.stop() == 0
    events = [json.loads(line) for line in daemon.log_tail(100_000).splitlines() if line]
    assert {e["process"] for e in events} >= {"supervisor"}
    assert any("kpd ready" in e["message"] for e in events)
    assert all({"time", "level", "process", "message"} <= set(e) for e in events)
