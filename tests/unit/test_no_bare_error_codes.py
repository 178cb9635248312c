"""Kafka error codes are named from the one table (``daemon.kafka.errors.ErrorCode``), never
written as bare numbers in ``daemon/``: ``code == ErrorCode.NOT_COORDINATOR``, not
``code == 16``.

Checked on the source with ``ast``: an equality or membership comparison between an
error-code-like operand (a name, attribute or ``["key"]`` containing ``code`` or ``error``) and
an integer literal; and a module constant named like a row of the table and bound to an integer
(``_UNSUPPORTED_VERSION = 35``, a second copy of the table). A sign test (``code < 0``: kpd's
own negative codes) names no Kafka code and is allowed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from daemon.kafka.errors import ERRORS

DAEMON = Path(__file__).resolve().parents[2] / "daemon"
TABLE = DAEMON / "kafka" / "errors.py"
CODE_LIKE = re.compile(r"code|error", re.IGNORECASE)
EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
# NONE is left out: other tables (compression codec ids) rightly have a NONE = 0 of their own.
KAFKA_NAMES = {info.name for info in ERRORS.values()} - {"NONE"}

# Files still holding bare codes, each until a named branch lands. Empty is the goal.
KNOWN_EXCEPTIONS: set[str] = set()


def _operand_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        first = node.args[0]  # answer.get("error_code", ...)
        if node.func.attr == "get" and isinstance(first, ast.Constant):
            return str(first.value)
    return None


def _holds_int_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _holds_int_literal(node.operand)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_holds_int_literal(element) for element in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        return node.func.id in ("frozenset", "set") and _holds_int_literal(node.args[0])
    return False


def _bare_comparisons(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            if not isinstance(op, EQUALITY):
                continue
            for named, other in ((left, right), (right, left)):
                name = _operand_name(named)
                if name and CODE_LIKE.search(name) and _holds_int_literal(other):
                    found.append((node.lineno, ast.unparse(node)))
    return found


def _table_copies(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and _holds_int_literal(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.lstrip("_") in KAFKA_NAMES:
                    found.append((node.lineno, ast.unparse(node)))
    return found


def _offences() -> dict[str, list[tuple[int, str]]]:
    offences = {}
    for path in sorted(DAEMON.rglob("*.py")):
        if path == TABLE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        found = _bare_comparisons(tree) + _table_copies(tree)
        if found:
            offences[str(path.relative_to(DAEMON))] = found
    return offences


def test_no_kafka_error_code_is_a_bare_number_outside_the_table():
    offences = _offences()
    unexpected = {path: found for path, found in offences.items() if path not in KNOWN_EXCEPTIONS}
    assert not unexpected, "name these codes from daemon.kafka.errors.ErrorCode: " + repr(
        unexpected
    )


def test_known_exceptions_still_need_their_place():
    # A file cleaned up leaves the list, so the list cannot hide a new offence later.
    assert set(_offences()) >= KNOWN_EXCEPTIONS


def test_the_check_sees_each_shape_it_forbids():
    source = """
_NOT_COORDINATOR = 16
if answer["error_code"] != 0: pass
if code in (45, 47): pass
if p.error_code == 5: pass
if answer.get("error_code", 0) == 16: pass
if code < 0: pass
if code == ErrorCode.NONE: pass
"""
    tree = ast.parse(source)
    assert [line for line, _ in _bare_comparisons(tree)] == [3, 4, 5, 6]
    assert [line for line, _ in _table_copies(tree)] == [2]
