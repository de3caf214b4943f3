"""Safe by default (issue 26): no code runs from a file found on disk, no archive writes outside its folder, no run
hangs, no typo or stale file silently changes a result."""

import os
import pickle
from pathlib import Path

import pytest
import torch
from test_harness_trainer import CFG, Killed, dies_before_step, make_task

from tasks.checkpoints import CheckpointError
from tasks.embeddings import read_glove
from tasks.files import UnsafeFileError, load_tensors
from tasks.report.figures import load_seq2seq_attention
from tasks.trainer import Trainer


class Planted:
    """A pickle that runs a command when loaded: what a file planted in a shared data dir or run dir could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path, protocol: int | None = None) -> Path:
    """``torch.save`` of a payload holding ``Planted`` (``protocol`` given: a bare pickle, torch's legacy format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": {}, "words": ["the"], "vectors": torch.zeros(1, 4), "items": [], "x": Planted(marker)}
    if protocol is None:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [None, 2], ids=["torch.save", "pickle"])
def test_a_planted_pickle_never_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = plant(tmp_path / "x.pt", marker, protocol)
    named = "posix.system" if protocol is None else r"torch.storage._load_from_bytes"  # the first refused name
    with pytest.raises(UnsafeFileError, match=f"{path} holds Python objects.*\\({named}\\): not loaded.*delete it"):
        load_tensors(path)
    assert not marker.exists()


def test_a_planted_pickle_torch_cannot_even_parse_never_runs(tmp_path):
    """Protocol 4 (opcodes torch's safe unpickler does not read): refused as a damaged file, and nothing runs."""
    marker = tmp_path / "ran"
    last = plant(tmp_path / "run" / "checkpoints" / "last.pt", marker, protocol=4)
    with pytest.raises(CheckpointError, match=f"{last} is damaged"):
        Trainer(make_task("softmax"), CFG, tmp_path / "run", seed=1).fit()
    assert not marker.exists()


def test_planted_checkpoint_glove_cache_and_attention_file_are_refused(tmp_path):
    marker = tmp_path / "ran"
    last = plant(tmp_path / "run" / "checkpoints" / "last.pt", marker)
    with pytest.raises(CheckpointError, match=f"{last} holds Python objects.*posix.system"):
        Trainer(make_task("softmax"), CFG, tmp_path / "run", seed=1).fit()
    glove = plant(tmp_path / "data" / "glove" / "glove.6B.zip.glove.6B.50d.txt.pt", marker)
    with pytest.raises(UnsafeFileError, match=str(glove)):
        read_glove(glove)
    with pytest.raises(UnsafeFileError, match="attention_test.pt"):
        load_seq2seq_attention(plant(tmp_path / "run" / "attention_test.pt", marker))
    assert not marker.exists()


def test_a_glove_cache_that_is_not_a_table_is_refused(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({"words": ["a", "b"], "vectors": torch.zeros(3, 4)}, path)
    with pytest.raises(Exception, match=f"{path} is not a parsed GloVe table"):
        read_glove(path)


def test_a_checkpoint_of_this_trainer_still_resumes(tmp_path):
    """What checkpoints hold (numpy's and python's RNG states, optimizer, scheduler and scaler states, progress,
    identity) loads under weights_only=True, and a killed run resumes from it."""
    with pytest.raises(Killed):
        Trainer(dies_before_step(make_task("softmax"), 6), CFG, tmp_path / "r", seed=1).fit()
    state = load_tensors(tmp_path / "r" / "checkpoints" / "last.pt")
    assert state["rng"]["numpy"][0] == "MT19937" and state["progress"]["step"] == 3
    summary = Trainer(make_task("softmax"), CFG, tmp_path / "r", seed=1).fit()
    assert summary["resumed_from"]["step"] == 3 and summary["steps"] == 16


# -- Gigaword's archive -------------------------------------------------------------------------------------------
def tar_with(path: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """A .tar.gz whose members are (name, bytes) files or (name, "->target") symbolic links."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content[2:]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


@pytest.mark.parametrize("member", [("/ABS/evil.txt", b"x"), ("sumdata/../../evil.txt", b"x"),
                                    ("sumdata/train/link", "->../../../evil.txt"), ("sumdata/l2", "->/etc/passwd")],
                         ids=["absolute", "dotdot", "relative-link", "absolute-link"])
def test_gigaword_archive_never_writes_outside_its_folder(tmp_path, member):
    from tasks.download import DataMissingError
    from tasks.seq2seq.data import _extract_sumdata

    name = member[0].replace("/ABS", str(tmp_path))
    (tmp_path / "cache").mkdir()
    archive = tar_with(tmp_path / "cache" / "summary.tar.gz", [("sumdata/train/train.title.txt", b"a title\n"),
                                                               (name, member[1])])
    root = tmp_path / "cache" / "sumdata"
    with pytest.raises(DataMissingError, match=f"{archive}: member .* outside {root}; nothing was extracted"):
        _extract_sumdata(archive, root)
    assert not (tmp_path / "evil.txt").exists() and not (root / "train" / "train.title.txt").exists()
    assert not (root / ".complete").exists()


def test_gigaword_archive_extracts_its_files(tmp_path):
    from tasks.seq2seq.data import _extract_sumdata

    archive = tar_with(tmp_path / "summary.tar.gz", [("sumdata/train/train.title.txt", b"a title\n"),
                                                     ("sumdata/train/inside", "->train.title.txt")])
    _extract_sumdata(archive, tmp_path / "sumdata")
    assert (tmp_path / "sumdata" / "train" / "train.title.txt").read_bytes() == b"a title\n"
    assert not (tmp_path / "sumdata" / "train" / "inside").exists()  # links are not extracted


def test_gigaword_download_is_verified_when_a_checksum_is_set(tmp_path, caplog):
    """No published sha256: the download is not verified and a warning says so; task.data.sha256 verifies it."""
    import logging

    from tasks.download import ChecksumError
    from tasks.seq2seq import data as s2s

    cache = tmp_path / "cache"
    cache.mkdir()
    tar_with(cache / "summary.tar.gz", [("sumdata/train/train.title.txt", b"t\n")])

    class Cfg(dict):
        __getattr__ = dict.get

    with caplog.at_level(logging.WARNING), pytest.raises(Exception):
        s2s.gigaword_files(Cfg(cache=str(cache), root=None), "train")  # the cached archive lacks the article file
    assert "summary.tar.gz has no recorded sha256" in caplog.text
    (cache / "sumdata" / ".complete").unlink()
    with pytest.raises(ChecksumError, match="summary.tar.gz exists but its sha256 is not 00"):
        s2s.gigaword_files(Cfg(cache=str(cache), root=None, sha256="00" * 32), "train")


# -- a mistyped preset ------------------------------------------------------------------------------------------
def run_train(*args, env=None, timeout=300):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "tasks.train", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline", **(env or {})}, timeout=timeout)


def test_a_mistyped_preset_is_an_error_listing_the_presets(tmp_path):
    done = run_train("experiment=demoo", "logger=none", f"hydra.run.dir={tmp_path}/run",
                     f"results_dir={tmp_path}/results")
    assert done.returncode != 0 and "Could not find 'experiment/demoo'" in done.stderr
    assert "Available options in 'experiment'" in done.stderr and "\tdemo\n" in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()
    no_preset = run_train("logger=none", "--cfg", "job")  # no experiment=: the defaults, as before
    assert no_preset.returncode == 0 and "name: snli" in no_preset.stdout


# -- a checkpoint without an identity ----------------------------------------------------------------------------
def test_a_checkpoint_without_identity_stops_unless_resume_unchecked(tmp_path):
    """Written by an older version (no ``identity`` entry): its settings cannot be compared, so it never continues
    silently under other ones (lr 3e-4 -> 0.5 was resumed and recorded as that run)."""
    run = tmp_path / "run"
    cfg = {**CFG, "epochs": 1}
    Trainer(make_task("softmax"), cfg, run, identity={"trainer.optimizer.lr": 3e-4}).fit()
    last = run / "checkpoints" / "last.pt"
    state = load_tensors(last)
    del state["identity"]
    torch.save(state, last)
    changed = {"trainer.optimizer.lr": 0.5}
    with pytest.raises(CheckpointError, match=f"{last} has no run identity.*trainer.resume_unchecked=true"):
        Trainer(make_task("softmax"), {**cfg, "epochs": 2}, run, identity=changed).fit()
    resumed = Trainer(make_task("softmax"), {**cfg, "epochs": 2, "resume_unchecked": True}, run,
                      identity=changed).fit()
    assert resumed["resumed_from"]["epoch"] == 1 and resumed["epochs"] == 2


# -- make tables -------------------------------------------------------------------------------------------------
def test_tables_say_why_a_record_is_left_out(tmp_path, capsys):
    """A record without ``task`` was dropped without a word; a metric stored as a string was averaged as a number."""
    import json

    from tasks.report.runs import load_local

    folder = tmp_path / "snli" / "softmax"
    folder.mkdir(parents=True)
    good = {"task": "snli", "attention": {"name": "softmax"}, "metric": "accuracy",
            "metrics": {"test": {"accuracy": 0.8, "per_example": {"correct": "0110"}, "bleu_signature": "nrefs:1"}}}
    (folder / "good.json").write_text(json.dumps(good))
    (folder / "no_task.json").write_text(json.dumps({k: v for k, v in good.items() if k != "task"}))
    (folder / "string.json").write_text(json.dumps({**good, "metrics": {"test": {"accuracy": "0.9"}}}))
    (folder / "good.attention_test.json").write_text("[]")  # what a SNLI run writes beside its record
    records = load_local(tmp_path)
    assert [Path(r["path"]).name for r in records] == ["good.json"]
    err = capsys.readouterr().err
    assert f"skipping {folder / 'no_task.json'}: not a run record: no 'task'" in err
    assert f"skipping {folder / 'string.json'}: metrics.test.accuracy is the string '0.9', not a number" in err
    assert "attention_test" not in err


# -- two processes on one run dir --------------------------------------------------------------------------------
def hold_lock(folder: Path):
    """Another process holding ``folder``'s run-dir lock (until killed)."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom tasks.files import run_dir_lock\n"
                               f"with run_dir_lock({str(folder)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(600)"], cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path):
    from tasks.files import RunDirInUse

    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        with pytest.raises(RunDirInUse, match=f"{run} is in use by another process \\(pid {holder.pid}, "):
            Trainer(make_task("softmax"), CFG, run, seed=1).fit()
        assert not (run / "checkpoints").exists()
        done = run_train("experiment=smoke_snli", "logger=none", f"hydra.run.dir={run}",
                         f"results_dir={tmp_path}/results")
        assert done.returncode == 2 and f"{run} is in use by another process (pid {holder.pid}" in done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "results").exists()
    finally:
        holder.kill()
        holder.wait()
    summary = Trainer(make_task("softmax"), {**CFG, "epochs": 1}, run, seed=1).fit()  # a dead holder never blocks
    assert summary["epochs"] == 1


# -- downloads that hang or lie ------------------------------------------------------------------------------------
@pytest.fixture
def odd_server():
    """127.0.0.1: /trickle sends headers, then a byte every 0.3 s of a 1000-byte body; /html answers 200 with an
    HTML error page (what a proxy or Google Drive sends instead of the file)."""
    import http.server
    import threading
    import time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>Sorry, this file is unavailable.</body></html>"
            self.send_response(200)
            if self.path.startswith("/trickle"):
                self.send_header("Content-Length", "1000")
                self.end_headers()
                try:
                    for _ in range(1000):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.3)
                except OSError:  # the client gave up
                    pass
                return
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_trickling_server_meets_the_overall_deadline_and_the_lock_is_released(odd_server, tmp_path, monkeypatch):
    import time

    from tasks.download import DataMissingError, fetch

    dest = tmp_path / "cache" / "file.bin"
    monkeypatch.setenv("DATA_DEADLINE_S", "1.5")
    start = time.monotonic()
    with pytest.raises(DataMissingError, match="no complete download after the deadline of 1.5 s"):
        fetch(f"{odd_server}/trickle", dest, timeout=1.0, progress=False)  # each byte comes within the timeout
    assert time.monotonic() - start < 6  # (without a deadline: 300 s)
    assert not dest.exists() and (tmp_path / "cache" / "file.bin.part").stat().st_size > 0  # kept: resumed later
    assert not (tmp_path / "cache" / "file.bin.lock").exists()  # released: the next process does not wait


def test_an_html_page_for_the_glove_zip_is_a_clear_error_and_leaves_nothing(odd_server, tmp_path):
    """Served with status 200: it was kept in the cache as glove.6B.zip (every later run failed the same way), the
    run died on BadZipFile with a traceback, and an empty run dir was left."""
    data, run = tmp_path / "data", tmp_path / "run"
    done = run_train("experiment=smoke_snli", "logger=wandb", f"hydra.run.dir={run}", f"data_dir={data}",
                     f"results_dir={tmp_path}/results", "embeddings.path=null",
                     f"embeddings.url={odd_server}/html/glove.6B.zip", "embeddings.member=glove.6B.50d.txt")
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{odd_server}/html/glove.6B.zip sent an HTML page, not a zip archive" in done.stderr
    assert "Traceback" not in done.stderr and "BadZipFile" not in done.stderr
    assert not list(data.rglob("glove.6B.zip*")) and not run.exists()


def test_wandb_online_without_credentials_is_one_line_and_leaves_no_run_dir(tmp_path):
    home = tmp_path / "home"  # no ~/.netrc login
    home.mkdir()
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "", "HOME": str(home), "NETRC": str(home / ".netrc")}
    run = tmp_path / "run"
    done = run_train("experiment=smoke_snli", "logger=wandb_online", f"hydra.run.dir={run}",
                     f"results_dir={tmp_path}/results", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: logger=wandb_online needs W&B credentials")
    assert "Traceback" not in done.stderr and not run.exists()


# -- SIGTERM while the data is fetched ---------------------------------------------------------------------------
def test_sigterm_during_the_data_setup_stops_the_run_at_once(tmp_path):
    """The handler was installed before the task's setup: "finishing this step" was logged and the download went
    on; only SIGKILL stopped it."""
    import signal
    import time

    from tasks.preemption import Preempted

    task = make_task("softmax")
    fetched = []

    def slow_setup():  # a download: SIGTERM arrives after its first second
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(50):
            time.sleep(0.1)
            fetched.append(1)

    task.setup = slow_setup
    before = signal.getsignal(signal.SIGTERM)
    start = time.monotonic()
    with pytest.raises(Preempted, match="stopped by SIGTERM during the setup.*nothing was trained") as info:
        Trainer(task, CFG, tmp_path / "run", seed=1).fit()
    assert info.value.signum == signal.SIGTERM and time.monotonic() - start < 3 and len(fetched) < 50
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


# -- evaluate, checkpoints of another model ----------------------------------------------------------------------
def test_evaluate_a_run_that_max_steps_ended_inside_its_first_epoch(tmp_path):
    """It has a record (best_epoch null: the model at its last step), but no best.pt: "the run has not finished an
    epoch yet" was the answer."""
    import json

    from tasks.evaluate import evaluate_run, main

    run = tmp_path / "run"
    done = run_train("experiment=smoke_snli", "trainer.max_steps=3", f"hydra.run.dir={run}",
                     f"results_dir={tmp_path}/results")
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = (tmp_path / "results" / "snli" / "softmax").glob("*.json")
    record = json.loads(path.read_text())
    assert record["best_epoch"] is None and not (run / "checkpoints" / "best.pt").exists()
    environment = record["environment"]  # what tells two machines' numbers apart (the CPU's vector instructions)
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and environment["cpu"]
    result = evaluate_run(run)
    assert result["checkpoint"] == "last.pt" and result["best_epoch"] is None
    assert result["metrics"]["accuracy"] == pytest.approx(record["metrics"]["test"]["accuracy"])
    (run / "checkpoints" / "last.pt").unlink()
    assert main([str(run)]) == 2  # one line: no checkpoint of the scored model


def test_a_checkpoint_of_another_model_names_the_file_and_the_way_out(tmp_path):
    run = tmp_path / "run"
    Trainer(make_task("softmax"), {**CFG, "epochs": 1}, run, seed=1).fit()
    last = run / "checkpoints" / "last.pt"
    state = load_tensors(last)
    state["model"]["renamed.weight"] = state["model"].pop(next(iter(state["model"])))
    torch.save(state, last)
    with pytest.raises(CheckpointError, match=f"{last} holds another model than this code builds \\(missing: .*"
                                              f"unexpected: renamed.weight\\).*trainer.resume=false"):
        Trainer(make_task("softmax"), {**CFG, "epochs": 2}, run, seed=1).fit()
