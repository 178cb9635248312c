"""docs/client.md's code examples run as written, against the fake kpd (fake_kpd.py).

Each ```python block of the document is executed with its socket path replaced by the fake's;
one failed record is configured for the error-handling example to take its branch.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from kpd.protocol import KpdErrorCode, Persistence
from tests.unit.client.fake_kpd import failing

DOC = Path(__file__).resolve().parents[3] / "docs" / "client.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_document_has_the_four_examples():
    assert len(BLOCKS) == 4
    assert ["Producer(" in BLOCKS[0], "AsyncProducer" in BLOCKS[1], "send_bulk" in BLOCKS[2],
            "DeliveryError" in BLOCKS[3]] == [True] * 4  # fmt: skip


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_client_md_example_runs_against_kpd(kpd, index):
    code = BLOCKS[index].replace("/run/kpd/kpd.sock", kpd.path)
    kpd.partitions["events"] = 3
    if "DeliveryError" in code:
        kpd.respond = failing(error=KpdErrorCode.BUFFER_FULL, persistence=Persistence.NOT_PERSISTED)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{DOC}:example {index + 1}", "exec"), {"__name__": "__example__"})
    assert "Traceback" not in out.getvalue()
