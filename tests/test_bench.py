"""`bench/run.py --quick` keeps working: it prints its table with every row. No figure in it is
looked at — speed is for the benchmark to show, never for a test to assert."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import ROOT

ROWS = ("1", "2", "2b", "2c", "3", "4", "5", "5b", "6", "7", "8", "9", "10")

pytestmark = pytest.mark.slow


def test_quick_benchmark_prints_every_row(mysql_server: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--mysql", mysql_server],
        capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# quick run") and "CPUs" in lines[0] and "Python" in lines[0]
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| # ")]
    numbers = {line.split("|")[1].strip() for line in body}
    assert numbers == set(ROWS), numbers
    assert json.loads(lines[-1]) == {"rows": len(body)}
    for line in body:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 7 and cells[2] and cells[3], line
