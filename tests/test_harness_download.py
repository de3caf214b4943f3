"""tasks/download.py and the SNLI downloader, end to end against a local HTTP server on 127.0.0.1."""

import functools
import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from tasks.download import ChecksumError, DataMissingError, extract, fetch, sha256sum, with_mirror
from tasks.snli import data as snli_data

FIXTURES = Path(__file__).parent / "data" / "snli"


def snli_zip_bytes() -> bytes:
    """A small zip in the real SNLI 1.0 layout: snli_1.0/snli_1.0_{train,dev,test}.jsonl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for split in ("train", "dev", "test"):
            zf.write(FIXTURES / f"snli_1.0_{split}.jsonl", f"snli_1.0/snli_1.0_{split}.jsonl")
    return buf.getvalue()


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www at http://127.0.0.1:<port>/ (the canonical SNLI path inside)."""
    www = tmp_path / "www"
    (www / "projects" / "snli").mkdir(parents=True)
    payload = snli_zip_bytes()
    (www / "projects" / "snli" / "snli_1.0.zip").write_bytes(payload)
    handler = functools.partial(QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield {"base": base, "url": f"{base}/projects/snli/snli_1.0.zip", "sha256": hashlib.sha256(payload).hexdigest(),
           "www": www}
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def dead_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/projects/snli/snli_1.0.zip"


def leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_good_checksum_then_cached(server, tmp_path):
    dest = tmp_path / "cache" / "snli_1.0.zip"
    path = fetch(server["url"], dest, sha256=server["sha256"], progress=False)
    assert path == dest and sha256sum(dest) == server["sha256"]
    assert leftovers(dest.parent) == ["snli_1.0.zip"]  # no temporary file left
    (server["www"] / "projects" / "snli" / "snli_1.0.zip").unlink()  # the cache is used: no download
    assert fetch(server["url"], dest, sha256=server["sha256"], progress=False) == dest


def test_fetch_bad_checksum_leaves_nothing(server, tmp_path):
    dest = tmp_path / "cache" / "snli_1.0.zip"
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch(server["url"], dest, sha256="0" * 64, progress=False)
    assert leftovers(dest.parent) == []


def test_fetch_corrupted_file_on_server(server, tmp_path):
    good = server["sha256"]
    target = server["www"] / "projects" / "snli" / "snli_1.0.zip"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    dest = tmp_path / "cache" / "snli_1.0.zip"
    with pytest.raises(ChecksumError):
        fetch(server["url"], dest, sha256=good, progress=False)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_no_network_says_which_file_where(tmp_path):
    url = dead_url()
    dest = tmp_path / "cache" / "snli_1.0.zip"
    with pytest.raises(DataMissingError) as info:
        fetch(url, dest, progress=False, timeout=5, hint="or set task.data.root=DIR")
    message = str(info.value)
    assert str(dest) in message and url in message and "task.data.root" in message
    assert leftovers(dest.parent) == []


def test_mirror_replaces_host(server, tmp_path):
    assert with_mirror("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "http://m/x/") == \
        "http://m/x/projects/snli/snli_1.0.zip"
    canonical = "https://nlp.stanford.edu.invalid/projects/snli/snli_1.0.zip"  # never reached: the mirror answers
    dest = tmp_path / "m" / "snli_1.0.zip"
    fetch(canonical, dest, sha256=server["sha256"], mirrors=[server["base"]], progress=False)
    assert sha256sum(dest) == server["sha256"]


def test_extract_members(server, tmp_path):
    zip_path = fetch(server["url"], tmp_path / "snli_1.0.zip", progress=False)
    out = extract(zip_path, "snli_1.0/snli_1.0_dev.jsonl", tmp_path / "dev.jsonl")
    assert out.read_bytes() == (FIXTURES / "snli_1.0_dev.jsonl").read_bytes()
    with pytest.raises(DataMissingError):
        extract(zip_path, "snli_1.0/nope.jsonl", tmp_path / "nope.jsonl")
    assert not (tmp_path / "nope.jsonl").exists()
    import gzip

    gz = tmp_path / "x.txt.gz"
    gz.write_bytes(gzip.compress(b"hello\n"))
    assert extract(gz, None, tmp_path / "x.txt").read_text() == "hello\n"


def test_snli_download_end_to_end(server, tmp_path):
    cfg = {"url": server["url"], "sha256": server["sha256"], "files": {}}
    splits = snli_data.load(cfg, tmp_path / "data", progress=False)
    assert (tmp_path / "data" / "snli" / "snli_1.0.zip").exists()
    direct = snli_data.read_jsonl(FIXTURES / "snli_1.0_dev.jsonl")
    assert splits["valid"] == direct and len(splits["train"]) > 100 and len(splits["test"]) > 10


def test_snli_download_offline_message(tmp_path):
    cfg = {"url": dead_url(), "sha256": None, "files": {}}
    with pytest.raises(DataMissingError) as info:
        snli_data.load(cfg, tmp_path / "data", progress=False)
    message = str(info.value)
    assert str(tmp_path / "data" / "snli" / "snli_1.0.zip") in message and "task.data.root" in message


def test_snli_checksum_is_the_canonical_one():
    assert snli_data.SHA256 == "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e"
