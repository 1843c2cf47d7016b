"""`ruff check .` (rules: pyproject.toml [tool.ruff]) must pass on the whole repository, as `make lint` runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    pytest.importorskip("ruff", reason="ruff is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"ruff check . failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
