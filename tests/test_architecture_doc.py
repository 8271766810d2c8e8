"""The docs stay true: every function and class docs/ARCHITECTURE.md's code blocks name exists
in the module its section is about, every documented function has the documented parameters,
and every test docs/reliability.md names exists.

A contract that drifted from the code (a renamed parameter, a moved function) fails here, so
the document is changed together with the code, as it asks.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
HEADING = re.compile(r"^## (.+?)(?:\s{2,}\(.*)?$")
DEFINITION = re.compile(r"^(def|class) (\w+)")


def _modules(heading: str) -> list[str]:
    """'oracle.py, agent/, autorun.py' -> ['alcli.oracle', 'alcli.agent', 'alcli.autorun']."""
    names = []
    for part in heading.split(","):
        name = part.strip().strip("`").removesuffix(".py").rstrip("/")
        names.append(name if name.startswith("alcli.") else f"alcli.{name}")
    return names


def _signature_text(lines: list[str], start: int) -> str:
    """A ``def`` line with its continuation lines, cut at the parenthesis closing its
    parameters (comments after ``#`` on each line left out)."""
    text = " ".join(line.split("#", 1)[0] for line in lines[start : start + 8])
    depth = 0
    for position, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == ")" and depth == 0:
            return text[: position + 1]
    raise AssertionError(f"unclosed signature in ARCHITECTURE.md: {lines[start]}")


def _documented() -> list[tuple[str, list[str], str, str]]:
    """(heading, candidate modules, name, signature text or "" for a class) per definition."""
    found: list[tuple[str, list[str], str, str]] = []
    heading, in_block = "", False
    lines = DOC.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.startswith("```"):
            in_block = line.startswith("```python")
            continue
        match = HEADING.match(line)
        if match and not in_block:
            heading = match.group(1)
            continue
        definition = DEFINITION.match(line) if in_block else None
        if definition:
            text = _signature_text(lines, number) if definition.group(1) == "def" else ""
            found.append((heading, _modules(heading), definition.group(2), text))
    return found


DOCUMENTED = _documented()


def _lookup(modules: list[str], name: str) -> object:
    for module_name in modules:
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"{name} is documented under {modules} but none of them has it")


def _documented_parameters(text: str) -> dict[str, inspect._ParameterKind]:
    """Parameter names and kinds of a documented ``def name(...)``, parsed as Python."""
    tree = ast.parse(f"{text}: pass")
    args = tree.body[0].args  # type: ignore[attr-defined]
    kinds: dict[str, inspect._ParameterKind] = {}
    for arg in args.posonlyargs + args.args:
        kinds[arg.arg] = inspect.Parameter.POSITIONAL_OR_KEYWORD
    for arg in args.kwonlyargs:
        kinds[arg.arg] = inspect.Parameter.KEYWORD_ONLY
    return kinds


def test_the_document_names_definitions_to_check():
    assert len(DOCUMENTED) >= 30, "the parser found too few definitions: has the format changed?"


@pytest.mark.parametrize(
    ("modules", "name", "signature"),
    [(modules, name, text) for _, modules, name, text in DOCUMENTED],
    ids=[f"{modules[0]}.{name}" for _, modules, name, _ in DOCUMENTED],
)
def test_each_documented_definition_exists_as_documented(modules, name, signature):
    obj = _lookup(modules, name)
    if not signature:  # a class: it exists
        assert inspect.isclass(obj), f"{name} is documented as a class"
        return
    assert callable(obj), f"{name} is documented as a function"
    actual = inspect.signature(obj).parameters
    documented = _documented_parameters(signature)
    for parameter, kind in documented.items():
        assert parameter in actual, f"{name}: documented parameter {parameter!r} does not exist"
        real = actual[parameter].kind
        if real is not inspect.Parameter.POSITIONAL_ONLY:
            assert real is kind, f"{name}: {parameter!r} is {real.description}, documented {kind}"
    undocumented = [
        p.name
        for p in actual.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and p.name not in documented
    ]
    assert not undocumented, (
        f"{name}: required parameters missing from the document: {undocumented}"
    )


def test_every_test_the_reliability_doc_names_exists():
    """docs/reliability.md maps each fault to the test that shows it; a renamed or removed
    test must not leave the document pointing at nothing."""
    text = (DOC.parent / "reliability.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(tests/\w+\.py)::(\w+)", text))
    assert len(named) >= 20
    root = DOC.parents[1]
    missing = []
    for path, name in sorted(named):
        tree = ast.parse((root / path).read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
