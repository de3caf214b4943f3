"""scripts/bench_model.py (make bench-model) in --quick mode on tiny models, and the table made from its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.report import bench

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["eager", "softmax", "sparsemax", "fusedmax", "oscarmax", "entmax"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run (its own process: it registers attention implementations and sets one thread)."""
    out = tmp_path_factory.mktemp("bench_model") / "model.json"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "scripts.bench_model", "--quick", "--tokens", "8", "--rounds", "1",
                    "--out", str(out)], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.read_text())


def test_quick_run_writes_every_cell(quick_run):
    cells = {(r["model"], r["mode"], r["tokens"], r["compiled"]) for r in quick_run["results"]}
    assert cells == {("llama", "train", 8, False), ("llama", "generate", 8, False), ("bert", "train", 8, False)}
    for r in quick_run["results"]:
        assert list(r["ms"]) == METHODS and all(v > 0 for v in r["ms"].values())
        assert r["ratio_to_eager"]["eager"] == 1.0
        assert set(r["peak_mib"]) == set(METHODS)  # the memory process ran
    assert quick_run["threads"] == 1 and quick_run["machine"]["torch_threads"] == 1


def test_model_table_from_the_quick_run(quick_run):
    text = bench.model_table(quick_run)
    assert "| model | step | tokens | eager softmax (transformers) | softmax (ours) | sparsemax |" in text
    assert "| llama | generate | 2 × 8 | 1.00× (" in text and "| bert | train | 2 × 8 |" in text


def test_compiled_cells_show_compiled_over_eager():
    data = {"rounds": 5, "threads": 1, "clock": "cpu", "results": [
        {"model": "llama", "mode": "train", "tokens": 256, "batch": 4, "compiled": False,
         "ms": {"eager": 100.0, "fusedmax": 150.0}, "peak_mib": {"eager": 20.0, "fusedmax": 31.5}},
        {"model": "llama", "mode": "train", "tokens": 256, "batch": 4, "compiled": True,
         "ms": {"eager": 80.0, "fusedmax": 160.0}, "compiled_over_eager": {"eager": 0.8, "fusedmax": 160 / 150}}]}
    text = bench.model_table(data)
    assert "| llama | train | 4 × 256 | 1.00× (100; 20.0) | 1.50× (150; 31.5) |" in text
    assert "| llama | train, compiled | 4 × 256 | 1.00× (80.0) | 2.00× (160) |" in text
    assert "| llama | compiled / eager | 4 × 256 | 0.80× | 1.07× |" in text
