"""tasks.files: the one atomic write of the harness (records, tables, vocabularies, data files, checkpoints)."""

import errno
import os

import pytest
import torch

import tasks.files as files_mod
from tasks.files import atomic_open, atomic_write, move_into_place, remove_orphan_temporaries


def test_atomic_write_writes_bytes_and_text_and_replaces(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # the folder is created
    assert atomic_write(path, "héllo\n") == path
    assert path.read_bytes() == "héllo\n".encode("utf-8")
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["a.txt"]


def test_atomic_write_refuses_other_data(tmp_path):
    with pytest.raises(TypeError, match="bytes or str"):
        atomic_write(tmp_path / "a", {"a": 1})
    assert not list(tmp_path.iterdir())


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.pt"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_open(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.pt"]


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # the data reaches the disk at the fsync: a full disk fails there
    with pytest.raises(OSError) as info:
        atomic_write(path, "new")
    assert info.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(PermissionError):
        atomic_write(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_a_keyboard_interrupt_leaves_no_temporary(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "a", "w") as f:
            f.write("x")
            raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())


def test_order_is_fsync_file_rename_fsync_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace, real_fsync_dir = os.fsync, os.replace, files_mod.fsync_dir
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    monkeypatch.setattr(files_mod, "fsync_dir", lambda d: (events.append("fsync_dir"), real_fsync_dir(d))[1])
    atomic_write(tmp_path / "a", "x")
    assert events == ["fsync", "replace", "fsync_dir", "fsync"]  # the last: fsync_dir's own fsync of the folder


def test_torch_save_through_atomic_open_round_trips(tmp_path):
    with atomic_open(tmp_path / "c.pt") as f:
        torch.save({"x": torch.arange(3)}, f)
    assert torch.equal(torch.load(tmp_path / "c.pt")["x"], torch.arange(3))


def test_atomic_open_text_mode_is_utf8(tmp_path):
    with atomic_open(tmp_path / "a.txt", "w") as f:
        f.write("→")
    assert (tmp_path / "a.txt").read_bytes() == "→".encode("utf-8")
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "b", "a"):
            pass


def test_move_into_place_flushes_then_renames(tmp_path, monkeypatch):
    (tmp_path / "d.part").write_bytes(b"data")
    (tmp_path / "d").write_bytes(b"old")
    events = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    assert move_into_place(tmp_path / "d.part", tmp_path / "d") == tmp_path / "d"
    assert (tmp_path / "d").read_bytes() == b"data" and os.listdir(tmp_path) == ["d"]
    assert events == ["fsync", "fsync"]  # the file, then the folder


def test_orphans_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / "last.pt.tmp-999999999"
    alive = tmp_path / f"last.pt.tmp-{os.getppid()}"
    other = tmp_path / "notes.tmp-abc"
    for p in (dead, alive, other):
        p.write_bytes(b"x")
    assert remove_orphan_temporaries(tmp_path) == [dead]
    assert alive.exists() and other.exists()


@pytest.mark.parametrize("module", ["trainer", "embeddings", "vocab", "records", "download", "seq2seq/data",
                                    "seq2seq/align", "report/tables"])
def test_no_other_atomic_write_in_the_harness(module):
    """One atomic write: the harness's modules write through tasks.files, none renames a file itself."""
    source = (files_mod.Path(files_mod.__file__).parent / f"{module}.py").read_text()
    assert "os.replace(" not in source and ".tmp-{os.getpid()}" not in source
