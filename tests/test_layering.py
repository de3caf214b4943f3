"""The harness's layers, read from the source with ast (every import, those inside functions too): the report reads
records and imports no task code; what a task and the report both need lives below both (tasks/metrics.py,
tasks/records.py, tasks/files.py)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = sorted((ROOT / "tasks" / "report").glob("*.py"))
TASK_PACKAGES = ("tasks.seq2seq", "tasks.snli")


def imported_modules(source: str, module: str) -> set[str]:
    """The absolute names that the source of ``module`` (dotted) imports; relative imports resolved, and for
    ``from X import y`` both ``X`` and ``X.y`` (y may be a module)."""
    package = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_imports_are_found_in_functions_and_resolved():
    source = "import json\nfrom .runs import get\ndef f():\n    from ..seq2seq import metrics\n"
    assert imported_modules(source, "tasks.report.x") >= {"json", "tasks.report.runs", "tasks.seq2seq.metrics"}


@pytest.mark.parametrize("path", REPORT, ids=lambda p: p.name)
def test_the_report_imports_no_task_code(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    bad = sorted(m for m in imported_modules(path.read_text(), module) if m.startswith(TASK_PACKAGES))
    assert not bad, f"{path.relative_to(ROOT)} imports task code {bad}: move what both need below both"


HARNESS = sorted(p for p in (ROOT / "tasks").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", HARNESS, ids=lambda p: p.name)
def test_the_harness_imports_no_task_package(path):
    """The harness builds a task from its config (Hydra's _target_) and catches one data error class
    (tasks.download.DataError) that every task's errors derive from: it never reaches into a task package."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    bad = sorted(m for m in imported_modules(path.read_text(), module) if m.startswith(TASK_PACKAGES))
    assert not bad, f"{path.relative_to(ROOT)} imports task code {bad}"


def test_every_task_data_error_is_the_one_the_harness_catches():
    from tasks.download import ChecksumError, DataError, DataFormatError, DataMissingError, EmptyDataError
    from tasks.snli.data import SNLIFormatError

    for error in (ChecksumError, DataFormatError, DataMissingError, EmptyDataError, SNLIFormatError):
        assert issubclass(error, DataError)
