"""The ``kpd`` fixture of the client's unit tests: a FakeKpd (fake_kpd.py) per test."""

from __future__ import annotations

import pytest

from tests.unit.client.fake_kpd import FakeKpd


@pytest.fixture
def kpd(tmp_path):
    with FakeKpd(str(tmp_path / "kpd.sock")) as server:
        yield server
