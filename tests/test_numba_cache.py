"""The library imports and works wherever it is installed (issue 26): a read-only install with a read-only HOME
(numba's ``cache=True`` found no cache location: "no locator available" on import), and a ``NUMBA_CACHE_DIR``
holding damaged files (``EOFError: Ran out of input`` at the first call). In subprocesses, on a read-only copy of
the package."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USE = ("import torch, attention\n"
       "p = attention.sparsemax(torch.tensor([[3.0, 1.0, 0.2], [0.5, 0.4, 2.0]]))\n"
       "assert torch.allclose(p, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])), p\n"
       "print('ok')\n")


def read_only(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def installed(tmp_path):
    """A read-only copy of the package and a HOME where nothing can be written. Read-only permissions do not stop
    root, so the places numba tries are also blocked for anyone: ``__pycache__`` is a file, HOME a path below one."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "attention", site / "attention", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "attention" / "__pycache__").write_text("not a folder\n")
    (tmp_path / "home").write_text("not a folder\n")
    read_only(site)
    yield site, tmp_path / "home" / "user"
    make_writable(tmp_path)


def use(site: Path, home: Path, cache_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(site), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), NUMBA_NUM_THREADS="1")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return subprocess.run([sys.executable, "-c", USE], cwd=site, env=env, capture_output=True, text=True,
                          timeout=600)


def test_import_and_use_from_a_read_only_install_with_a_read_only_home(installed):
    site, home = installed
    done = use(site, home)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert "no locator" not in done.stderr


def test_damaged_cache_files_are_a_miss_not_an_error(installed, tmp_path):
    site, home = installed
    cache = tmp_path / "numba-cache"
    first = use(site, home, cache)  # fills the cache
    assert first.returncode == 0, first.stderr[-2000:]
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert any(p.suffix == ".nbi" for p in files) and any(p.suffix == ".nbc" for p in files)
    for p in files:  # damaged: emptied indexes, garbage data
        p.write_bytes(b"" if p.suffix == ".nbi" else b"\x80\x04garbage")
    done = use(site, home, cache)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert "EOFError" not in done.stderr
