"""``--profile``: the kpd engine contender under py-spy, as a flame graph and a top table.

Owns the py-spy child of one profiled run. py-spy attaches to the contender by pid once it is
ready (so record building and imports stay out of the profile) and stops by itself when the
contender exits. Figures of a profiled run are not reported: sampling slows the process.

Writes, per workload, ``kpd-engine-<workload>.svg`` (flame graph) and ``.txt`` (the top
functions by own time and by total time, from py-spy's collapsed stacks). py-spy is in the
``bench`` extra; as root it may attach to any process (otherwise see ptrace_scope).
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.runner import REPO_ROOT

__all__ = ["attach_py_spy", "find_py_spy", "render_top"]

_RATE_HZ = 250
_EXIT_WAIT_S = 60.0


def find_py_spy() -> str:
    """py-spy beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise FileNotFoundError("py-spy not found: pip install py-spy (the bench extra has it)")
    return found


def attach_py_spy(output: Path, fmt: str) -> Callable[[list[int]], Callable[[], None]]:
    """A runner ``attach`` hook recording the first measured pid to ``output`` in ``fmt``
    (py-spy's ``flamegraph`` or ``raw`` = collapsed stacks)."""

    def attach(pids: list[int]) -> Callable[[], None]:
        proc = subprocess.Popen(
            [find_py_spy(), "record", "--pid", str(pids[0]), "--rate", str(_RATE_HZ),
             "--format", fmt, "--output", str(output)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

        def stop() -> None:
            # py-spy writes its output when the target exits, which follows "exit"; SIGINT
            # (its Ctrl-C) makes it write and stop if the target lingers.
            try:
                proc.wait(timeout=_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGINT)
                proc.wait(timeout=_EXIT_WAIT_S)
            assert proc.stderr is not None
            errors = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            if not output.exists():
                raise RuntimeError(f"py-spy wrote no {output}: {errors[-1000:]}")

        return stop

    return attach


def render_top(collapsed: str, limit: int = 30) -> str:
    """Top functions from py-spy raw output ("frame;frame;... count" per line): own samples
    (the function was on top of the stack) and total samples (anywhere in the stack)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_function(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    if not samples:
        return "no samples\n"
    lines = [f"{samples} samples at {_RATE_HZ} Hz", "", "  own%  total%  function"]
    for name, count in own.most_common(limit):
        lines.append(f"{100 * count / samples:6.1f} {100 * total[name] / samples:7.1f}  {name}")
    lines += ["", "by total (own + callees):", " total%  function"]
    for name, count in total.most_common(limit):
        lines.append(f"{100 * count / samples:7.1f}  {name}")
    return "\n".join(lines) + "\n"


def _function(frame: str) -> str:
    """Drop the line number from py-spy's "name (path:line)", so that samples of one
    function on different lines count together, and shorten the path."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("/site-packages/", f"{REPO_ROOT}/"):
        path = path.split(marker, 1)[-1]
    return f"{name} ({path})" if path else name
