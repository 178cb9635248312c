"""kpd's configuration: the import point for the schema, loader and generated reference.

kpd reads one YAML file. ``load_config`` / ``parse_config`` return a frozen ``DaemonConfig``
(one settings object per section, ``producer`` for ``kafka:``, plus the warnings of the
finalize step for the supervisor to log); ``producer_settings`` builds the engine's
``ProducerSettings`` alone, through the same loader, for the engine and tests.

The parts live in ``daemon.settings`` (values, schema, model, loader, reference). This module
and those import nothing but the stdlib and PyYAML, and never log.

    python -m daemon.config --markdown > docs/configuration.md
    python -m daemon.config --example  > config/kpd.example.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from daemon.settings import model
from daemon.settings.loader import ALL_SECTIONS, ConfigError, load, read_yaml
from daemon.settings.model import (
    DaemonConfig,
    LogSettings,
    MetricsSettings,
    ProducerSettings,
    RingSettings,
    ShutdownSettings,
    SocketSettings,
    TopicSettings,
    WorkerSettings,
)
from daemon.settings.reference import render_example, render_markdown
from daemon.settings.schema import SECTIONS, SETTINGS

__all__ = [
    "ConfigError",
    "DaemonConfig",
    "LogSettings",
    "MetricsSettings",
    "ProducerSettings",
    "RingSettings",
    "ShutdownSettings",
    "SocketSettings",
    "TopicSettings",
    "WorkerSettings",
    "changed_settings",
    "load_config",
    "parse_config",
    "producer_settings",
    "render_example",
    "render_markdown",
]

_KAFKA_BY_ATTR = {s.attr: s for s in SETTINGS if s.section == "kafka"}
# DaemonConfig field of each YAML section: the `kafka:` section becomes `producer`.
_FIELD = {"kafka": "producer"}


def load_config(path: str | Path) -> DaemonConfig:
    """Read and validate the YAML file at ``path``; raises ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:  # strerror alone: the message names the file once
        raise ConfigError("", f"cannot read {source}: {exc.strerror}", source=source) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read {source}: not UTF-8 ({exc})", source=source) from exc
    return parse_config(read_yaml(text, source), source=source)


def parse_config(data: dict[str, Any] | None, source: str = "<dict>") -> DaemonConfig:
    """Validate an already-parsed YAML document (sections as keys)."""
    draft = load(data, source, ALL_SECTIONS)
    sections = {
        _FIELD.get(sec.name, sec.name): sec.cls(**draft.values[sec.name]) for sec in SECTIONS
    }
    return model.DaemonConfig(**sections, warnings=tuple(draft.warnings), source=source)


def changed_settings(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """The YAML paths (``kafka.linger.ms``) whose values differ between two configurations."""
    return [
        setting.path
        for setting in SETTINGS
        if getattr(_section(old, setting.section), setting.attr)
        != getattr(_section(new, setting.section), setting.attr)
    ]


def _section(config: DaemonConfig, name: str) -> Any:
    return getattr(config, _FIELD.get(name, name))


def producer_settings(kafka: dict[str, Any] | None = None, **overrides: Any) -> ProducerSettings:
    """``ProducerSettings`` from a ``kafka:`` mapping plus overrides by attribute name.

    ``producer_settings({"linger.ms": 0}, bootstrap_servers="127.0.0.1:9092", acks=1)``:
    overrides take YAML-style values, count as written (so the finalize rules treat them as
    explicit) and go through the same validation as the file. ``bootstrap_servers`` is
    required, as in the file; it also takes ``[(host, port), ...]``.
    """
    section = dict(kafka or {})
    for attr, value in overrides.items():
        setting = _KAFKA_BY_ATTR.get(attr)
        if setting is None:
            raise TypeError(f"producer_settings() got an unknown setting {attr!r}")
        section[setting.key] = value
    draft = load({"kafka": section}, "producer_settings()", ("kafka",))
    return model.ProducerSettings(**draft.values["kafka"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    renderers = {"--markdown": render_markdown, "--example": render_example}
    if len(args) != 1 or args[0] not in renderers:
        print("usage: python -m daemon.config --markdown | --example", file=sys.stderr)
        return 2
    sys.stdout.write(renderers[args[0]]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
