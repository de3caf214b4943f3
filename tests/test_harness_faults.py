"""Faults never end in a wrong record (issue 17): diverging runs, lost or damaged checkpoints, a full disk, a
max_steps budget that is raised, orphan temporary files."""

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from test_harness_trainer import CFG, Killed, assert_same, batches_with, dies_before_step, make_task, weights

import attention
import tasks.files as files_mod
from tasks import records
from tasks.checkpoints import CheckpointError, atomic_save
from tasks.divergence import TrainingDiverged
from tasks.trainer import Trainer

QUIET = {**CFG, "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0, "log_every_steps": 0}


@pytest.fixture
def no_attention_checks():
    """As on a GPU: the attention library does not look at the scores' values, so nan flows through."""
    previous = attention.set_checks(False)
    yield
    attention.set_checks(previous)


def ckpt(run_dir, name="last.pt"):
    return Path(run_dir) / "checkpoints" / name


# -- 1. a diverging run ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_every", [0, 1])  # checked at checkpoints / epoch ends, and at logging steps
def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, no_attention_checks, log_every):
    """The learning rate jumps to 1e30 after step 4: the loss is nan from step 6 on. Training stops with an error
    that names the step; last.pt is the step-3 checkpoint (finite weights), no best.pt is written."""
    run = tmp_path / "run"

    def explode():
        for group in trainer.optimizer.param_groups:
            group["lr"] = 1e30

    task = make_task("softmax")
    task.train_batches = batches_with(task.train_batches, 5, explode)  # step 5 is the first one at 1e30
    trainer = Trainer(task, {**CFG, "checkpoint_every_steps": 3, "grad_clip": None, "log_every_steps": log_every},
                      run, seed=1)
    diverged = r"training diverged: the (training loss is|weights are) not finite.* at step \d"
    with pytest.raises(TrainingDiverged, match=diverged) as info:
        trainer.fit()
    message = str(info.value)
    assert str(ckpt(run)) in message and "(step 3)" in message and "no record" in message
    state = torch.load(ckpt(run), weights_only=False)
    assert state["progress"]["step"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not ckpt(run, "best.pt").exists()


def test_nan_validation_metric_is_never_an_improvement(tmp_path):
    task = make_task()
    task.evaluate = lambda model, split: {"accuracy": float("nan")}
    with pytest.raises(TrainingDiverged, match=r"validation accuracy is nan after epoch 1"):
        Trainer(task, {**QUIET, "epochs": 1}, tmp_path / "run", seed=1).fit()
    assert not ckpt(tmp_path / "run", "best.pt").exists()


def test_record_is_strict_json_and_refuses_a_nan_headline(tmp_path):
    record = {k: None for k in records.KEYS}
    record.update(metric="accuracy", metrics={"valid": {"accuracy": 0.5, "support": float("nan")}, "test": {}},
                  history=[{"train_loss": float("inf")}])
    path = records.write_record(tmp_path / "r.json", record)

    def reject(token):
        raise ValueError(f"bare {token} in the record")

    back = json.loads(path.read_text(), parse_constant=reject)
    assert back["metrics"]["valid"] == {"accuracy": 0.5, "support": None} and back["history"][0]["train_loss"] is None
    record["metrics"]["test"] = {"accuracy": float("nan")}
    with pytest.raises(records.RecordError, match=r"test accuracy is nan"):
        records.write_record(tmp_path / "bad.json", record)
    assert os.listdir(tmp_path) == ["r.json"]


def test_record_write_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    record = {k: None for k in records.KEYS}
    record.update(metric="accuracy", metrics={"valid": {"accuracy": 0.5}})

    # a part written, then the disk is full
    monkeypatch.setattr(files_mod, "open", lambda path, mode="r": _FullDisk(path, mode, 1), raising=False)
    with pytest.raises(OSError, match="No space left"):
        records.write_record(tmp_path / "r.json", record)
    assert os.listdir(tmp_path) == []


# -- 3. a missing checkpoint -------------------------------------------------------------------------------------


def test_missing_last_checkpoint_never_overwrites_best(tmp_path):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    best_bytes = ckpt(run, "best.pt").read_bytes()
    ckpt(run).unlink()
    with pytest.raises(CheckpointError, match=r"last.pt is missing.*trainer.resume=false"):  # before any step
        Trainer(dies_before_step(make_task(), 1), {**QUIET, "epochs": 2}, run, seed=1).fit()
    assert ckpt(run, "best.pt").read_bytes() == best_bytes
    # starting over is explicit; the old best.pt is removed first, so it can never stand for the new run
    summary = Trainer(make_task(), {**QUIET, "epochs": 1, "resume": False}, run, seed=2).fit()
    assert summary["resumed_from"] is None and summary["best_epoch"] == 1
    assert torch.load(ckpt(run, "best.pt"), weights_only=False)["epoch"] == 0


AFTER_BEST = {**QUIET, "epochs": 2, "max_steps": 12}  # last.pt at step 12, inside epoch 2; best.pt of epoch 1


def test_missing_best_checkpoint_is_an_error_not_the_last_model(tmp_path):
    run = tmp_path / "run"
    Trainer(make_task(), AFTER_BEST, run, seed=1).fit()
    assert torch.load(ckpt(run), weights_only=False)["progress"]["best_epoch"] == 0
    ckpt(run, "best.pt").unlink()
    with pytest.raises(CheckpointError, match=r"best.pt is missing.*epoch 1 was this run's best"):
        Trainer(make_task(), AFTER_BEST, run, seed=1).fit()  # the finished run, evaluated again
    with pytest.raises(CheckpointError, match=r"best.pt is missing"):  # before training more, not after
        Trainer(dies_before_step(make_task(), 1), {**AFTER_BEST, "max_steps": 16}, run, seed=1).fit()


def test_best_checkpoint_of_another_epoch_is_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(make_task(), AFTER_BEST, run, seed=1).fit()
    state = torch.load(ckpt(run, "best.pt"), weights_only=False)
    torch.save({**state, "epoch": 4}, ckpt(run, "best.pt"))
    with pytest.raises(CheckpointError, match=r"holds the model of epoch 5, but this run's best epoch is 1"):
        Trainer(make_task(), AFTER_BEST, run, seed=1).fit()


@pytest.mark.parametrize("damage", ["missing", "older"])
def test_best_checkpoint_is_rebuilt_from_a_last_checkpoint_of_the_best_epochs_end(tmp_path, damage):
    """last.pt is written before best.pt at an epoch end: after a kill between the two (best.pt older or absent),
    last.pt holds the best epoch's model itself, and the resume rewrites best.pt from it."""
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    good = torch.load(ckpt(run, "best.pt"), weights_only=False)
    if damage == "missing":
        ckpt(run, "best.pt").unlink()
    else:
        torch.save({**good, "epoch": -5}, ckpt(run, "best.pt"))
    again = Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    rebuilt = torch.load(ckpt(run, "best.pt"), weights_only=False)
    assert rebuilt["epoch"] == 0 and again["best_epoch"] == 1
    assert_same(rebuilt["model"], good["model"])


# -- 4. max_steps continues a run --------------------------------------------------------------------------------


def test_raising_max_steps_continues_mid_epoch_exactly(tmp_path):
    """5 steps, then the same run with max_steps=12, equals a fresh 12-step run (8 steps an epoch): the partial
    epoch is not counted as an epoch, and the continuation resumes inside it."""
    cfg = {**QUIET, "epochs": 5}
    first = Trainer(make_task(), {**cfg, "max_steps": 5}, tmp_path / "a", seed=1).fit()
    assert first["epochs"] == 0 and first["best_epoch"] is None and first["best_step"] == 5 and first["steps"] == 5
    continued = Trainer(make_task(), {**cfg, "max_steps": 12}, tmp_path / "a", seed=1).fit()
    fresh = Trainer(make_task(), {**cfg, "max_steps": 12}, tmp_path / "b", seed=1).fit()
    assert continued["resumed_from"] == {"epoch": 0, "batch_in_epoch": 5, "step": 5}
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    for key in ("valid", "test", "epochs", "steps", "best_epoch", "best_step"):
        assert continued[key] == fresh[key], key
    assert fresh["epochs"] == 1 and fresh["steps"] == 12
    assert [h["train_loss"] for h in continued["history"]] == [h["train_loss"] for h in fresh["history"]]


def test_max_steps_at_an_epoch_end_is_an_epoch(tmp_path):
    summary = Trainer(make_task(), {**QUIET, "epochs": 5, "max_steps": 8}, tmp_path / "r", seed=1).fit()
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1 and summary["best_step"] == 8


# -- 7. damaged checkpoints --------------------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(len(data)), "empty": b""}[how])


@pytest.mark.parametrize("how", ["truncated", "random", "empty"])
def test_damaged_last_checkpoint_names_the_file_and_the_way_out(tmp_path, how):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    _damage(ckpt(run), how)
    with pytest.raises(CheckpointError) as info:
        Trainer(make_task(), {**QUIET, "epochs": 2}, run, seed=1).fit()
    message = str(info.value)
    assert f"{ckpt(run)} is damaged" in message and "trainer.resume=false" in message
    assert "best.pt is not affected" in message  # the other checkpoint: still usable for an evaluation


@pytest.mark.parametrize("how", ["truncated", "random", "empty"])
def test_damaged_best_checkpoint_names_the_file(tmp_path, how):
    run = tmp_path / "run"
    Trainer(make_task(), AFTER_BEST, run, seed=1).fit()
    _damage(ckpt(run, "best.pt"), how)
    with pytest.raises(CheckpointError, match=rf"{ckpt(run, 'best.pt')} is damaged.*trainer.resume=false"):
        Trainer(make_task(), AFTER_BEST, run, seed=1).fit()


def test_checkpoints_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_save({"x": torch.ones(3)}, tmp_path / "c.pt")
    assert events[:2] == ["fsync", "replace"]
    assert os.listdir(tmp_path) == ["c.pt"]


# -- 8. a full disk ----------------------------------------------------------------------------------------------


class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, path, mode, room):
        self.file, self.room = open(path, mode), room

    def write(self, data):
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_full_disk_while_checkpointing_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    before = ckpt(run).read_bytes()
    monkeypatch.setattr(files_mod, "open", lambda path, mode="r": _FullDisk(path, mode, 1000), raising=False)
    with pytest.raises(CheckpointError) as info:
        Trainer(make_task(), {**QUIET, "epochs": 2}, run, seed=1).fit()
    message = str(info.value)
    assert "No space left on device" in message and str(run / "checkpoints") in message
    assert "previous" in message and "kept" in message
    assert ckpt(run).read_bytes() == before and sorted(os.listdir(run / "checkpoints")) == ["best.pt", "last.pt"]


# -- 10. orphans -------------------------------------------------------------------------------------------------


def test_orphan_temporary_checkpoints_are_removed_on_start(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    dead = run / "checkpoints" / "last.pt.tmp-999999999"  # no such process: left by a kill -9
    alive = run / "checkpoints" / f"last.pt.tmp-{os.getppid()}"  # a live process may still be writing it
    dead.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"being written")
    trainer = Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1)
    trainer.setup()
    assert not dead.exists() and alive.exists()


# -- through the command line: one line, an exit code, no record, no empty run dir ------------------------------

ROOT = Path(__file__).resolve().parents[1]


def cli(tmp_path, *args, checks=True, flags=(), timeout=300):
    """``python -m tasks.train`` (attention checks off if ``checks`` is False, as on a GPU); (rc, stdout+stderr)."""
    import subprocess
    import sys

    code = ("import runpy, attention; attention.set_checks(False); "
            "runpy.run_module('tasks.train', run_name='__main__', alter_sys=True)")
    prefix = [sys.executable, "-m", "tasks.train"] if checks else [sys.executable, "-c", code]
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run([*prefix, *flags, "experiment=smoke_snli", f"results_dir={tmp_path}/results", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("override,expected", [
    ("seed=abc", "config seed='abc': must be an integer"),
    ("trainer.epochs=abc", "config trainer.epochs='abc': must be an integer >= 1"),
    ("trainer.optimizer.lr=abc", "config trainer.optimizer.lr='abc': must be a number > 0"),
    ("task.batch_size=0", "config task.batch_size=0: must be an integer >= 1"),
    ("attention.gamma=0", "attention.gamma=0 attention.lam=0.1: fusedmax: gamma must be > 0"),
])
def test_bad_config_values_are_one_line_before_any_data(tmp_path, override, expected):
    rc, out = cli(tmp_path, "attention=fusedmax", override, f"hydra.run.dir={tmp_path}/run",
                  "task.data.root=/nonexistent")  # data is never looked at
    assert rc == 2 and out.strip().splitlines()[-1] == f"error: {expected}" if "attention" not in override else \
        rc == 2 and expected in out.strip().splitlines()[-1]
    assert "Traceback" not in out and not (tmp_path / "run").exists()


def test_bad_config_in_a_sweep_leaves_no_empty_run_dir(tmp_path):
    rc, out = cli(tmp_path, "trainer.epochs=0", f"hydra.sweep.dir={tmp_path}/sweep", flags=["-m"])
    assert rc != 0 and "config trainer.epochs=0: must be an integer >= 1" in out
    assert not list((tmp_path / "sweep").glob("*/*/.hydra"))


def test_unwritable_run_dir_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    rc, out = cli(tmp_path, f"hydra.run.dir={tmp_path}/a_file/run")
    assert rc == 2 and f"error: the run dir {tmp_path}/a_file/run cannot be written: Not a directory" in out
    assert "Traceback" not in out
    rc, out = cli(tmp_path, f"hydra.sweep.dir={tmp_path}/a_file/sweep", flags=["-m"])
    assert rc == 2 and f"error: the run dir {tmp_path}/a_file/sweep cannot be written: Not a directory" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("checks", [False, True])
def test_diverging_run_exits_non_zero_without_a_record(tmp_path, checks):
    """`experiment=demo trainer.optimizer.lr=1e30 trainer.grad_clip=null` with attention checks off used to train
    on nan, keep a nan best.pt and write a record with bare NaN tokens, exit code 0. With the checks on (the CPU
    default), the attention's "scores contain nan" traceback came first: now the same one line."""
    rc, out = cli(tmp_path, "trainer.optimizer.lr=1e30", "trainer.grad_clip=null", f"hydra.run.dir={tmp_path}/run",
                  checks=checks)
    assert rc == 3 and "training diverged" in out.strip().splitlines()[-1], out[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "run" / "checkpoints" / "best.pt").exists()


# -- 2. empty or unusable data is refused before training, naming the file --------------------------------------

DATA = Path(__file__).parent / "data"


def _snli_root(tmp_path, train: bytes | None = None, valid: bytes | None = None, gz=False):
    root = tmp_path / "snli"
    root.mkdir()
    for split, content in (("train", train), ("dev", valid)):
        name = f"snli_1.0_{split}.jsonl"
        data = content if content is not None else (DATA / "snli" / name).read_bytes()
        if gz:
            import gzip

            # an empty file: 0 bytes, or a gzip stream of nothing
            (root / f"{name}.gz").write_bytes(gzip.compress(data) if data or gz == "empty-gzip" else b"")
        else:
            (root / name).write_bytes(data)
    return root


def _no_consensus(name):
    lines = (DATA / "snli" / name).read_text().splitlines()
    return "".join(json.dumps({**json.loads(line), "gold_label": "-"}) + "\n" for line in lines).encode()


@pytest.mark.parametrize("gz", [False, "zero-bytes", "empty-gzip"])
@pytest.mark.parametrize("case,content,expected", [
    ("train", b"", r"snli_1.0_train.jsonl(.gz)?: it is empty"),
    ("train", "no_consensus", r"snli_1.0_train.jsonl(.gz)?: every one of its 150 examples has gold_label '-'"),
    ("valid", b"", r"snli_1.0_dev.jsonl(.gz)?: it is empty"),
])
def test_empty_snli_files_are_refused(tmp_path, gz, case, content, expected):
    from tasks.download import EmptyDataError
    from tasks.snli import data as snli_data

    if content == "no_consensus":
        content = _no_consensus("snli_1.0_train.jsonl")
    root = _snli_root(tmp_path, **{case: content}, gz=gz)
    files = {"train": "snli_1.0_train.jsonl", "valid": "snli_1.0_dev.jsonl", "test": None}
    with pytest.raises(EmptyDataError, match=expected):
        snli_data.load({"root": str(root), "files": files}, tmp_path / "cache")


def test_empty_gzip_of_zero_bytes_is_refused_through_the_trainer(tmp_path):
    """The whole path: a 0-byte train file used to give 0 steps an epoch and a chance-level record."""
    from tasks.download import EmptyDataError
    from tasks.snli.task import SNLITask

    root = _snli_root(tmp_path, train=b"", gz=True)
    task = SNLITask(attention={"name": "softmax"}, data={"root": str(root), "files": {
        "train": "snli_1.0_train.jsonl.gz", "valid": "snli_1.0_dev.jsonl.gz", "test": None}},
        embeddings=None, model={"hidden": 8, "embedding_dim": 8}, batch_size=10, progress=False)
    with pytest.raises(EmptyDataError, match="snli_1.0_train.jsonl.gz: it is empty"):
        Trainer(task, QUIET, tmp_path / "run", seed=1).fit()


def _multi30k_root(tmp_path, **replace):
    import gzip
    import shutil

    root = tmp_path / "multi30k"
    shutil.copytree(DATA / "multi30k", root)
    for name, lines in replace.items():
        (root / f"{name}.gz").write_bytes(gzip.compress("".join(f"{line}\n" for line in lines).encode()))
    return root


@pytest.mark.parametrize("replace,expected", [
    ({"train.de": []}, r"train.de.gz is empty"),
    ({"val.en": []}, r"val.en.gz is empty"),
    ({"train.en": ["a b c"] * 79}, r"train.de.gz has 80 lines, .*train.en.gz has 79"),
])
def test_unusable_seq2seq_files_are_refused(tmp_path, replace, expected):
    from tasks.download import DataError
    from tasks.seq2seq import data as D
    from tasks.seq2seq.task import _Cfg

    root = _multi30k_root(tmp_path, **replace)
    with pytest.raises(DataError, match=expected):
        D.load_splits("multi30k", _Cfg(root=str(root), src_lang="de", tgt_lang="en", cache=str(tmp_path / "c")))


def test_length_filter_that_drops_every_pair_is_refused(tmp_path):
    from tasks.download import EmptyDataError
    from tasks.seq2seq.task import Multi30kTask

    task = Multi30kTask(name="multi30k", data={"root": str(DATA / "multi30k"), "src_lang": "de", "tgt_lang": "en"},
                        attention={"name": "softmax"}, train={"max_src_len": 1, "max_tgt_len": 1},
                        data_dir=str(tmp_path))
    with pytest.raises(EmptyDataError, match=r"max_src_len=1 and max_tgt_len=1 drop every one of the 80 training "
                                             r"pairs of .*train.de.gz"):
        task.setup()


# -- 10. a mistyped embeddings.path, preset files in data_dir ----------------------------------------------------


def test_mistyped_embeddings_path_warns_before_the_download(tmp_path, monkeypatch, caplog):
    from tasks.download import DataMissingError
    from tasks.embeddings import glove_file

    monkeypatch.setenv("DATA_OFFLINE", "1")  # the download itself is refused here
    with caplog.at_level("WARNING"), pytest.raises(DataMissingError):
        glove_file({"path": str(tmp_path / "glove.6B.50d.txt.gzz"), "url": "http://127.0.0.1:9/glove.zip"},
                   tmp_path / "cache", progress=False)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warnings and f"embeddings.path={tmp_path / 'glove.6B.50d.txt.gzz'} does not exist" in warnings[0].message


def test_preset_files_in_data_dir_are_verified_once(tmp_path, monkeypatch):
    """experiment=snli_cpu reads task.data.root=${data_dir}/snli: a file there is the download cache's, and is
    checked against its recorded checksum (once: a marker records the match for that size and time)."""
    import gzip

    from tasks import download
    from tasks.download import ChecksumError, content_sha256
    from tasks.snli import data as snli_data

    name = "snli_1.0_dev.jsonl.gz"
    cache = tmp_path / "data"
    (cache / "snli").mkdir(parents=True)
    path = cache / "snli" / name
    path.write_bytes(gzip.compress((DATA / "snli" / "snli_1.0_dev.jsonl").read_bytes()))
    cfg = {"root": str(cache / "snli"), "files": {"train": name, "valid": name, "test": None}}
    with pytest.raises(ChecksumError, match=rf"{path}: its content has sha256 .* not the recorded"):
        snli_data.locate(cfg, cache, progress=False)
    # the right content (here: the fixture's hash recorded as the file's): verified, then only the marker is read
    monkeypatch.setitem(snli_data.PUBLIC, name, (snli_data.PUBLIC[name][0], content_sha256(path)))
    hashed = []
    monkeypatch.setattr(download, "content_sha256", lambda p: (hashed.append(p), content_sha256(p))[1])
    assert snli_data.locate(cfg, cache, progress=False)["valid"] == (path, None)
    assert snli_data.locate(cfg, cache, progress=False)["valid"] == (path, None)
    assert hashed == [path]  # the second call read the marker
    # a folder of your own (not the cache) is used as it is
    own = tmp_path / "mine"
    own.mkdir()
    (own / name).write_bytes(b"")
    monkeypatch.setitem(snli_data.PUBLIC, name, (snli_data.PUBLIC[name][0], "0" * 64))
    assert snli_data.locate({**cfg, "root": str(own)}, cache, progress=False)["valid"] == (own / name, None)


def test_finiteness_is_read_at_checkpoints_and_epoch_ends_not_every_step(tmp_path, monkeypatch):
    """The non-finite check costs a device-to-host sync on a GPU: it runs at logging steps, checkpoints and epoch
    ends, not after every step (2 epochs of 8 steps here, no logging, no step checkpoints)."""
    calls = []
    real = Trainer.check_finite
    monkeypatch.setattr(Trainer, "check_finite", lambda self: (calls.append(self.progress.step), real(self))[1])
    Trainer(make_task(), QUIET, tmp_path / "run", seed=1).fit()
    assert sorted(set(calls)) == [8, 16]


def test_multi30k_files_in_the_cache_are_verified(tmp_path):
    """A Multi30k file in data.root = the download cache (the CPU preset's default) that is not the published
    file: refused, naming it (the fixtures differ from the published files)."""
    from tasks.download import ChecksumError
    from tasks.seq2seq import data as D
    from tasks.seq2seq.task import _Cfg

    root = _multi30k_root(tmp_path)
    with pytest.raises(ChecksumError, match=rf"{root / 'train.de.gz'}: its file has sha256"):
        D.load_splits("multi30k", _Cfg(root=str(root), src_lang="de", tgt_lang="en", cache=str(root)))


def test_kill_between_a_max_steps_checkpoint_and_its_epoch_end(tmp_path, monkeypatch):
    """max_steps=8 is the epoch's last batch: its checkpoint says "finished" before the epoch end has run. A kill
    right then, and the same command finishes that epoch (validation, best.pt) instead of a partial evaluation."""
    fresh = Trainer(make_task(), {**QUIET, "epochs": 5, "max_steps": 8}, tmp_path / "fresh", seed=1).fit()
    real = Trainer.end_of_epoch

    def killed(self):
        raise Killed

    monkeypatch.setattr(Trainer, "end_of_epoch", killed)
    with pytest.raises(Killed):
        Trainer(make_task(), {**QUIET, "epochs": 5, "max_steps": 8}, tmp_path / "run", seed=1).fit()
    monkeypatch.setattr(Trainer, "end_of_epoch", real)
    resumed = Trainer(make_task(), {**QUIET, "epochs": 5, "max_steps": 8}, tmp_path / "run", seed=1).fit()
    for key in ("valid", "test", "epochs", "best_epoch", "best_step", "steps"):
        assert resumed[key] == fresh[key], key
    assert resumed["epochs"] == 1 and resumed["best_epoch"] == 1
