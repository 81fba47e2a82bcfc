"""How papayya finds a run's agent again: by name in this process, or by an import that cannot start a
batch again (no I/O beyond temporary source files)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import papayya
from papayya import registry
from papayya.errors import AgentNotImportable


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def test_an_agent_is_found_by_its_name_in_the_process_that_defines_it() -> None:
    @papayya.agent(name="registry-test.found")
    def f(item: Any) -> Any:
        return item

    assert registry.find("registry-test.found", None) is f
    assert registry.lookup("registry-test.unknown") is None


def test_an_agent_wrapped_by_a_framework_is_found_by_name_and_unwrapped() -> None:
    @papayya.agent(name="registry-test.wrapped")
    def f(item: Any) -> Any:
        return item

    class Task:  # a Celery task's shape: the decorated function is its ``run``
        def __init__(self, run: Any) -> None:
            self.run = run

    assert registry.unwrap(Task(f)) is f
    assert registry.unwrap(Task(lambda item: item)) is None
    assert registry.find("registry-test.wrapped", {"module": "nowhere", "qualname": "task"}) is f


GUARDED = """
from papayya import agent

@agent
def enrich(item):
    return item

def main():
    enrich.map([], tenant="t")

if __name__ == "__main__":
    main()
"""

UNGUARDED_DIRECT = """
from papayya import agent

@agent
def enrich(item):
    return item

result = enrich.map([{"id": 1}], tenant="t")
"""

UNGUARDED_INDIRECT = """
import papayya

@papayya.agent
def enrich(item):
    return item

def run_all():
    helper()

def helper():
    print(enrich.submit([{"id": 1}], tenant="t"))

run_all()
"""

HARMLESS = """
from papayya import agent
import pandas_like as pd

frame = pd.frame().map(str)  # a .map at the top level that is not an agent's

@agent
def enrich(item):
    return item
"""


@pytest.mark.parametrize(
    ("source", "line"),
    [(GUARDED, None), (UNGUARDED_DIRECT, 8), (UNGUARDED_INDIRECT, 14), (HARMLESS, None)],
    ids=["guarded", "direct", "through-functions", "not-an-agent"],
)
def test_the_static_check_finds_a_batch_started_at_the_top_level(
    tmp_path: Path, source: str, line: int | None
) -> None:
    assert registry.unguarded_batch_line(str(write(tmp_path, "s.py", source))) == line


def test_a_run_recorded_before_papayya_noted_its_start_is_imported_only_when_its_script_is_guarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An entrypoint an earlier papayya recorded for `python legacy_ok.py`: module __main__, no root.
    ok = write(tmp_path, "legacy_ok.py", GUARDED)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = {"module": "__main__", "qualname": "enrich", "file": str(ok)}
    try:
        found = registry.find("legacy_ok.enrich", ep)
        assert found.name == "legacy_ok.enrich"
    finally:
        sys.modules.pop("legacy_ok", None)
    bad = write(tmp_path, "legacy_bad.py", UNGUARDED_DIRECT)
    ep = {"module": "__main__", "qualname": "enrich", "file": str(bad)}
    with pytest.raises(AgentNotImportable, match=r"line 8\) outside `if __name__ == \"__main__\":`"):
        registry.find("legacy_bad.enrich", ep)
    assert "legacy_bad" not in sys.modules


def test_a_recorded_unguarded_start_is_refused_even_when_the_file_looks_harmless(tmp_path: Path) -> None:
    # The batch was started through something the static check cannot see; the record says so.
    script = write(tmp_path, "dynamic.py", GUARDED)
    ep = {
        "module": "dynamic",
        "qualname": "enrich",
        "file": str(script),
        "root": str(tmp_path),
        "started": {"line": 3, "guarded": False},
    }
    with pytest.raises(AgentNotImportable, match="line 3"):
        registry.find("dynamic.enrich", ep, verb="replay")
    assert "dynamic" not in sys.modules


def test_the_entrypoint_records_the_module_root_and_that_no_top_level_code_started_the_run() -> None:
    @papayya.agent(name="registry-test.entry")
    def f(item: Any) -> Any:
        return item

    ep = registry.entrypoint(f)
    assert ep["module"] == __name__
    assert ep["file"] == str(Path(__file__).resolve())
    assert Path(ep["root"], *__name__.split(".")).with_suffix(".py") == Path(__file__).resolve()
    assert ep["started"] is None  # called from a test function, not from this module's top level
