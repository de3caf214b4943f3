"""Data staging for clusters and fresh machines, against a local HTTP server on 127.0.0.1: resumable downloads,
one download per file, DATA_OFFLINE, the CPU presets' files from their public copies (a local folder as a mirror
only), GloVe parsed once, `make data` (tasks/stage.py) and `make demo` on the bundled data without network."""

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from tasks import embeddings
from tasks.download import ChecksumError, DataMissingError, fetch
from tasks.seq2seq import data as s2s
from tasks.snli import data as snli_data

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "data"
DEMO = ROOT / "tasks" / "snli" / "demo_data"


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; ``cut`` (a class attribute) sends only that many bytes once."""

    ranges = True
    cut: int | None = None
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        header = self.headers.get("Range")
        type(self).seen.append(header)
        start = int(re.match(r"bytes=(\d+)-", header).group(1)) if header and self.ranges else 0
        if start >= len(data) and start:
            return self.send_error(416)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if type(self).cut is not None:
            body, type(self).cut = body[: type(self).cut], None
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    handler = type("Handler", (RangeHandler,), {"seen": [], "cut": None, "ranges": True})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"base": f"http://127.0.0.1:{httpd.server_address[1]}", "www": www, "handler": handler}
    httpd.shutdown()
    httpd.server_close()


def blob(n=300_000) -> bytes:
    return bytes((i * 7919) % 251 for i in range(n))


def test_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    payload = blob()
    (server["www"] / "big.bin").write_bytes(payload)
    url, dest = f"{server['base']}/big.bin", tmp_path / "cache" / "big.bin"
    sha = hashlib.sha256(payload).hexdigest()
    server["handler"].cut = 100_000  # the connection drops after 100 kB
    with pytest.raises(DataMissingError, match="truncated|IncompleteRead"):
        fetch(url, dest, sha256=sha, progress=False)
    part = dest.with_name("big.bin.part")
    assert not dest.exists() and part.stat().st_size == 100_000
    assert fetch(url, dest, sha256=sha, progress=False).read_bytes() == payload
    assert server["handler"].seen[-1] == "bytes=100000-" and not part.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big.bin"]  # no part, no lock left


@pytest.mark.parametrize("ranges", [True, False])
def test_a_stale_part_restarts_cleanly(server, tmp_path, ranges):
    payload = blob(50_000)
    (server["www"] / "f.bin").write_bytes(payload)
    server["handler"].ranges = ranges  # False: a server that ignores Range sends the whole file (200)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"x" * 20_000)  # left by another file or a corrupted transfer
    fetch(f"{server['base']}/f.bin", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload


def test_offline_machines_fail_at_once_and_say_to_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_OFFLINE", "1")
    with pytest.raises(DataMissingError, match="make data TASK="):
        fetch("http://127.0.0.1:9/never.zip", tmp_path / "never.zip", progress=False)
    cached = tmp_path / "have.txt"
    cached.write_text("x")
    assert fetch("http://127.0.0.1:9/have.txt", cached, progress=False) == cached  # the cache needs no network


def test_concurrent_fetches_download_once(server, tmp_path):
    (server["www"] / "g.bin").write_bytes(blob(200_000))
    dest = tmp_path / "g.bin"
    threads = [threading.Thread(target=fetch, args=(f"{server['base']}/g.bin", dest), kwargs={"progress": False})
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dest.read_bytes() == blob(200_000) and len(server["handler"].seen) == 1


def serve_gz(server, rel: str, text: bytes, gz: bool) -> str:
    path = server["www"] / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text) if gz else text)
    return f"{server['base']}/{rel}"


def test_snli_preset_files_come_from_public_copies_with_a_mirror_first(server, tmp_path, monkeypatch):
    """experiment=snli_cpu on a machine without ../shared: the files are downloaded from their public copies; a
    folder that has them (../shared/data/snli) is used as it is, without network."""
    train = (FIXTURES / "snli" / "snli_1.0_train.jsonl").read_bytes()
    dev = (FIXTURES / "snli" / "snli_1.0_dev.jsonl").read_bytes()
    monkeypatch.setattr(snli_data, "PUBLIC", {
        "snli_1.0_train_0.01.jsonl.gz": (serve_gz(server, "f/train.jsonl.gz", train, True),
                                         hashlib.sha256(train).hexdigest()),
        "snli_1.0_dev.jsonl.gz": (serve_gz(server, "dev.jsonl.gz", dev, True), hashlib.sha256(dev).hexdigest())})
    cfg = {"root": str(tmp_path / "empty"), "test_from_valid": 0.5,
           "files": {"train": "snli_1.0_train_0.01.jsonl.gz", "valid": "snli_1.0_dev.jsonl.gz", "test": None}}
    splits = snli_data.load(cfg, tmp_path / "data", progress=False)
    assert len(splits["train"]) == len(snli_data.read_jsonl(FIXTURES / "snli" / "snli_1.0_train.jsonl"))
    assert (tmp_path / "data" / "snli" / "snli_1.0_dev.jsonl.gz").exists()
    # a mirror folder with plain copies: used as is (the server is not asked)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "snli_1.0_train_0.01.jsonl").write_bytes(train)
    (mirror / "snli_1.0_dev.jsonl").write_bytes(dev)
    asked = len(server["handler"].seen)
    snli_data.load({**cfg, "root": str(mirror)}, tmp_path / "data2", progress=False)
    assert len(server["handler"].seen) == asked
    # a public copy that is not the expected file: rejected, nothing kept in the cache
    serve_gz(server, "dev.jsonl.gz", dev[:-200], True)
    with pytest.raises(ChecksumError, match="snli_1.0_dev"):
        snli_data.load(cfg, tmp_path / "data3", progress=False)
    assert not (tmp_path / "data3" / "snli" / "snli_1.0_dev.jsonl.gz").exists()


def test_gigaword_and_iwslt_preset_files_come_from_public_copies(server, tmp_path, monkeypatch):
    giga = FIXTURES / "gigaword" / "sumdata" / "train"
    article = gzip.decompress((giga / "train.article.txt.gz").read_bytes())
    title = gzip.decompress((giga / "train.title.txt.gz").read_bytes())
    de = gzip.decompress((FIXTURES / "iwslt14" / "prepared" / "valid.de.gz").read_bytes())
    en = gzip.decompress((FIXTURES / "iwslt14" / "prepared" / "valid.en.gz").read_bytes())
    monkeypatch.setitem(s2s.PUBLIC, "gigaword", {
        "train.article.sample1000.txt.gz": (serve_gz(server, "h/test.article.txt", article, False),
                                            hashlib.sha256(article).hexdigest()),
        "train.title.sample1000.txt.gz": (serve_gz(server, "h/train.title.txt", title, False),
                                          hashlib.sha256(title).hexdigest())})
    monkeypatch.setitem(s2s.PUBLIC, "iwslt14", {
        "valid.de": (serve_gz(server, "i/valid.de", de, False), hashlib.sha256(de).hexdigest()),
        "valid.en": (serve_gz(server, "i/valid.en", en, False), hashlib.sha256(en).hexdigest())})
    cache = tmp_path / "data"
    from tasks.seq2seq.task import _Cfg

    g = _Cfg(root=str(cache / "gigaword"), cache=str(cache / "gigaword"),
             files={"train": ["train.article.sample1000.txt.gz", "train.title.sample1000.txt.gz"]})
    pairs = s2s.load_gigaword(g, "train")
    assert len(pairs) == len(article.decode().splitlines()) and pairs.tgt[0] == title.decode().split("\n")[0].split()
    assert sorted(p.name for p in (cache / "gigaword").iterdir()) == ["train.article.sample1000.txt",
                                                                       "train.title.sample1000.txt"]
    i = _Cfg(root=str(tmp_path / "no-mirror"), cache=str(cache / "iwslt14"), preprocessed=True, src_lang="de",
             tgt_lang="en", files={"train": "valid"})
    assert len(s2s.load_iwslt14(i, "train")) == len(de.decode().splitlines())


def test_glove_from_the_canonical_zip_parsed_once(server, tmp_path, monkeypatch):
    text = (FIXTURES / "glove" / "glove.tiny.16d.txt").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("glove.tiny.16d.txt", text)
        zf.writestr("glove.tiny.8d.txt", b"other 1 2 3 4 5 6 7 8\n")
    (server["www"] / "glove.tiny.zip").write_bytes(buf.getvalue())
    cfg = {"path": str(tmp_path / "mirror" / "glove.tiny.16d.txt.gz"),  # not there: the zip is downloaded
           "url": f"{server['base']}/glove.tiny.zip", "member": "glove.tiny.16d.txt", "dim": 16}
    cache = tmp_path / "data" / "glove"
    parsed = embeddings.glove_file(cfg, cache, progress=False)
    assert parsed == cache / "glove.tiny.zip.glove.tiny.16d.txt.pt"
    wanted = {"man", "Woman", "xyz"}
    from_text = embeddings.read_glove(FIXTURES / "glove" / "glove.tiny.16d.txt", wanted)
    from_tensor = embeddings.read_glove(parsed, wanted, dim=16)
    assert from_text.keys() == from_tensor.keys() and all(torch.equal(from_text[k], from_tensor[k]) for k in from_text)
    # staged: a job on a compute node neither downloads nor parses again
    monkeypatch.setenv("DATA_OFFLINE", "1")
    monkeypatch.setattr(embeddings, "iter_glove", lambda *a, **k: pytest.fail("parsed the text again"))
    assert embeddings.glove_file(cfg, cache, progress=False) == parsed


def run(module, *args, env=None, timeout=600):
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", "DATA_OFFLINE": "1",
           **{v: "http://127.0.0.1:9" for v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
           **(env or {})}  # no network: any download attempt fails at once
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_make_data_stages_then_jobs_read_the_cache(tmp_path):
    out = run("tasks.stage", "experiment=smoke_snli", f"data_dir={tmp_path}/data",
              f"hydra.run.dir={tmp_path}/stage", "hydra.output_subdir=null")
    assert "staged snli" in out and (tmp_path / "data" / "glove" / "glove.tiny.16d.txt.pt").exists()


def test_demo_bundle_offline(tmp_path):
    """`make demo` on a fresh machine: the bundled real data, no network, train + test + the attention figure
    (here on a fraction of the bundle, one epoch)."""
    sizes = {p.name: p.stat().st_size for p in DEMO.glob("*.gz")}
    assert len(sizes) == 3 and all(size < 5 * 2**20 for size in sizes.values()), sizes
    assert "CC BY-SA 4.0" in (DEMO / "README.md").read_text()
    run("tasks.train", "experiment=demo", "attention=fusedmax", "trainer.epochs=1", "trainer.progress=false",
        "+task.data.max_examples.train=500", "+task.data.max_examples.valid=400", f"data_dir={tmp_path}/data",
        f"hydra.run.dir={tmp_path}/run", f"results_dir={tmp_path}/results")
    (path,) = (tmp_path / "results" / "snli" / "fusedmax").glob("experiment=demo*.json")
    record = json.loads(path.read_text())
    assert record["metrics"]["test"]["accuracy"] > 0 and record["metrics"]["test"]["examples"] == 200
    assert (tmp_path / "run" / "attention_test.png").stat().st_size > 1000
