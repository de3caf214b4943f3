"""The linter's configuration ([tool.ruff] in pyproject.toml) holds for the code base, and CI runs it first."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    pytest.importorskip("ruff")  # in the test extra
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_linter_before_the_tests():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    lint = next(i for i, line in enumerate(lines) if line.startswith(".venv/bin/ruff check ."))
    assert lines.index("make install-test") < lint < lines.index("make test")
