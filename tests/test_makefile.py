"""The Makefile's plumbing, printed with `make -n` (nothing is installed or run): what each target installs, and
what `make reproduce` passes to each task's sweep."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry(*args) -> str:
    done = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def installs(output: str) -> list[str]:
    return [line for line in output.splitlines() if "pip install" in line]


def test_experiment_targets_install_the_harness_not_the_test_tools(tmp_path):
    venv = f"VENV={tmp_path}/venv"  # a venv that does not exist: the install recipe is printed
    snli = installs(dry("snli", venv, "GPU="))
    assert any("torch==2.13.0" in line for line in snli)
    assert any("-e '.[experiments,plot]'" in line for line in snli) and not any("[test" in line for line in snli)
    test = installs(dry("test", venv, "GPU="))
    assert any("-e '.[test]'" in line for line in test)
    gpu = installs(dry("snli", venv, "GPU=1", "TORCH_INDEX=https://download.pytorch.org/whl/cu128"))
    assert any("-e '.[experiments,plot,cuda]'" in line for line in gpu)
    assert any("torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" in line for line in gpu)
    assert any("-e '.[test,cuda]'" in line for line in installs(dry("test", venv, "GPU=1")))


def test_reproduce_passes_each_task_its_own_arguments(tmp_path):
    out = dry("reproduce", f"VENV={tmp_path}/venv", "GPU=", "ARGS=trainer.progress=false",
              "ARGS_gigaword=task.data.root=/g/sumdata", "DUC_ROOT=/d/DUC2004")
    sweeps = {line.split("task=", 1)[1].split()[0]: line for line in out.splitlines()
              if "-m tasks.train -m" in line}
    assert set(sweeps) == {"snli", "multi30k", "iwslt", "gigaword"}
    assert all("trainer.progress=false" in line for line in sweeps.values())
    assert "task.data.root=/g/sumdata" in sweeps["gigaword"] and "task.duc.root=/d/DUC2004" in sweeps["gigaword"]
    assert not any("task.data.root" in line for task, line in sweeps.items() if task != "gigaword")
    assert "task=duc" not in out  # DUC-2004 is evaluated with the Gigaword models, not retrained
