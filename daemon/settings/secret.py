"""Secrets in the configuration: passwords, key passphrases, client secrets, tokens.

A secret is written inline, or — so the YAML can stay world-readable — as ``{file: PATH}``
(the file's contents, one trailing newline removed) or ``{credential: NAME}`` (the systemd
credential NAME, i.e. ``$CREDENTIALS_DIRECTORY/NAME`` as ``LoadCredential=`` provides it).
The file is read when the configuration is loaded, so ``kpd check-config`` reports a missing
or unreadable one.

``Secret`` keeps the value out of every ``repr`` and ``str``: settings objects are logged,
written to status files and formatted into errors, and none of those may show a password.
Only the code that puts the secret on the wire calls ``reveal()``.

Imports only the stdlib.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["CREDENTIALS_DIRECTORY", "Secret", "parse_secret"]

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"  # set by systemd for LoadCredential=
_MAX_SECRET_BYTES = 64 * 1024  # a token or password; anything larger is the wrong file


class Secret:
    """A secret value that never prints itself; ``source`` says where it came from."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<{self.source}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def parse_secret(raw: Any) -> Secret:
    """A Secret from a YAML value; raises ValueError (whose text never holds the secret)."""
    if isinstance(raw, str):
        return Secret(raw)
    if isinstance(raw, dict) and len(raw) == 1:
        ((kind, where),) = raw.items()
        if kind == "file" and isinstance(where, str) and where:
            return Secret(_read(Path(where)), f"file {where}")
        if kind == "credential" and isinstance(where, str) and where and "/" not in where:
            directory = os.environ.get(CREDENTIALS_DIRECTORY)
            if not directory:
                raise ValueError(
                    f"names the systemd credential {where!r} but $CREDENTIALS_DIRECTORY is not "
                    "set (give it with LoadCredential= in the unit)"
                )
            return Secret(_read(Path(directory) / where), f"credential {where}")
    raise ValueError(
        "must be a string, {file: PATH} or {credential: NAME} (value not shown: it is a secret)"
    )


def _read(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_SECRET_BYTES:
        raise ValueError(f"secret file {path} is larger than {_MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8") from None
    return text.removesuffix("\n").removesuffix("\r")
