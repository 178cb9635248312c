"""The fixtures of the client's unit tests: ``kpd``, a FakeKpd (fake_kpd.py) per test, and
``send_path``, each twin of send()'s hot path in turn."""

from __future__ import annotations

import pytest

from tests.accel import IMPLEMENTATIONS, use_send_path
from tests.unit.client.fake_kpd import FakeKpd


@pytest.fixture
def kpd(tmp_path):
    with FakeKpd(str(tmp_path / "kpd.sock")) as server:
        yield server


@pytest.fixture(params=IMPLEMENTATIONS)
def send_path(request, monkeypatch):
    """Run a test with each twin of send()'s hot path (C, pure Python): see use_send_path."""
    use_send_path(monkeypatch, request.param)
    return request.param
