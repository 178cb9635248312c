"""Logging for kpd's processes: one line per event, as text or JSON (``log.format``).

Every process logs to stderr (the journal under systemd); the role in each line says which
process spoke.
"""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["setup_logging"]


class _JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "process": self._role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event)


def setup_logging(level: str, fmt: str, role: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter(role))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s kpd[{role}] %(levelname)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
