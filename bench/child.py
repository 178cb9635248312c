"""The contender side of a benchmark run: one child process, one producer client.

Owns the child's half of a line protocol with the parent (bench.runner), so every contender
is timed and measured the same way:

    child  -> {"event": "ready", "pid": ..., "measure_pids": [...]}   records built, client up
              or {"event": "skip", "reason": ...}   the contender cannot run here; it exits
    parent -> "go"                          parent has read /proc of the child and the broker
    child  -> {"event": "done", "wall_s": ..., "delivered": ..., "failed": ..., "errors": [...],
               "reaped_cpu_s": ..., "reaped_rss_kib": ..., "warm_ups": ...,
               "latency": {...} or null}
    parent -> "exit"                        parent has read /proc again; the child may close

Messages go over the child's original stdout; fd 1 is pointed at stderr before any client is
imported, so a library that prints cannot corrupt the protocol. The wall clock runs from "go"
to the last delivery report (or to ``stop_clock()``, when a contender tallies outcomes after
they all arrived). A program the child ran and reaped during the timed part (kcat, ``kpd
send``, rsyslogd) cannot be read from /proc by the parent: the child reports its rusage
instead. ``skip`` is for what only the child can find out (an API the installed client lacks,
a module a program lacks); the run is then reported as skipped, not failed. Run as
``python -m bench.child SPEC_JSON``; the contender module named in the spec provides
``main(session)``. Imports no client library itself.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from bench.workloads import Records, Workload, make_records

__all__ = ["ChildSpec", "Session", "main"]


@dataclass(frozen=True)
class ChildSpec:
    """Everything one child needs; travels as JSON on its command line."""

    contender: str
    module: str  # the contender module providing main(session)
    bootstrap: str
    topic: str
    workload: Workload
    shard: int = 0
    shards: int = 1
    options: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = dict(self.__dict__, workload=self.workload.to_json())
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        data = json.loads(text)
        data["workload"] = Workload.from_json(data["workload"])
        return cls(**data)


class Session:
    """What a contender's ``main`` talks to: the records, and the ready/done handshake."""

    def __init__(self, spec: ChildSpec, records: Records, channel: TextIO, commands: TextIO):
        self.spec = spec
        self.records = records
        self._channel = channel  # protocol messages to the parent
        self._commands = commands  # "go" / "exit" from the parent
        self._started: float | None = None
        self._stopped: float | None = None

    @property
    def workload(self) -> Workload:
        return self.spec.workload

    def ready(self, measure_pids: tuple[int, ...] = ()) -> None:
        """The client is connected and knows the topic: block until the parent says go.

        ``measure_pids`` names extra processes whose CPU and memory count as this contender's
        (a program the child drives and keeps running); the child itself is always measured.
        """
        self._send(event="ready", pid=os.getpid(), measure_pids=list(measure_pids))
        self._expect("go")
        self._started = time.perf_counter()

    def skip(self, reason: str) -> None:
        """Instead of ready(): this contender cannot run here (the reason says why); the
        contender's main returns after this."""
        self._send(event="skip", reason=reason)

    def stop_clock(self) -> None:
        """Every record has its outcome: stop the clock now, before tallying them."""
        if self._stopped is None:
            self._stopped = time.perf_counter()

    def done(
        self,
        delivered: int,
        failed: int,
        errors: list[str],
        *,
        reaped_cpu_s: float = 0.0,
        reaped_rss_kib: int = 0,
        warm_ups: int = 0,
        latency: dict | None = None,
    ) -> None:
        """Every record has a delivery report: stop the clock (unless stop_clock() did),
        report, wait for "exit". ``reaped_*``: CPU and peak RSS of programs the child ran
        and reaped while timed; ``warm_ups``: records keyed bench.verify.WARM_UP_KEY sent
        before the clock; ``latency``: a paced run's figures (bench.pacing)."""
        if self._started is None:
            raise RuntimeError("done() before ready()")
        self.stop_clock()
        assert self._stopped is not None
        wall = self._stopped - self._started
        self._send(event="done", wall_s=wall, delivered=delivered, failed=failed,
                   errors=errors[:5], reaped_cpu_s=reaped_cpu_s, reaped_rss_kib=reaped_rss_kib,
                   warm_ups=warm_ups, latency=latency)  # fmt: skip
        self._expect("exit")

    def _send(self, **message: object) -> None:
        self._channel.write(json.dumps(message) + "\n")
        self._channel.flush()

    def _expect(self, command: str) -> None:
        line = self._commands.readline().strip()
        if line != command:
            raise SystemExit(f"bench child: expected {command!r} from the parent, got {line!r}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.child SPEC_JSON", file=sys.stderr)
        return 2
    spec = ChildSpec.from_json(args[0])
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # from here on, anything printed to stdout lands on stderr
    records = make_records(spec.workload, spec.shard, spec.shards)
    contender = importlib.import_module(spec.module)
    contender.main(Session(spec, records, channel, sys.stdin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
