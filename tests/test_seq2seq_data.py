"""tasks/seq2seq/data.py on tiny files in the real formats (tests/data, see make_seq2seq_fixtures.py), and the
downloads end to end against a local HTTP server on 127.0.0.1."""

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch

from tasks.download import ChecksumError, DataMissingError
from tasks.seq2seq import data as D
from tasks.seq2seq.task import _Cfg

DATA = Path(__file__).parent / "data"


def cfg(**kw):
    return _Cfg(kw)


def test_multi30k_reader_local_root():
    c = cfg(root=str(DATA / "multi30k"), src_lang="de", tgt_lang="en", lowercase=True, cache="unused")
    splits = D.load_splits("multi30k", c)
    assert {k: len(v) for k, v in splits.items()} == {"train": 80, "valid": 12, "test": 12}
    first_en = gzip.open(DATA / "multi30k" / "train.en.gz", "rt").readline().strip()
    assert splits["train"].tgt_raw[0] == first_en.lower()
    assert splits["train"].tgt[0][-1] == "." and splits["train"].tgt[0][0] == first_en.split()[0].lower()
    assert all(t == t.lower() for s in splits["train"].src for t in s)


def test_multi30k_missing_local_file_names_it(tmp_path):
    c = cfg(root=str(tmp_path), src_lang="de", tgt_lang="en", cache="unused")
    with pytest.raises(DataMissingError, match="train.de.gz"):
        D.load_split("multi30k", c, "train")


def test_prepare_iwslt14_like_the_script(tmp_path):
    out = D.prepare_iwslt14(DATA / "iwslt14" / "de-en.tgz", tmp_path / "prep", valid_every=5)
    read = lambda name: (out / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    train_en, valid_en, test_en = read("train.en"), read("valid.en"), read("test.en")
    joined = "\n".join(train_en + valid_en)
    assert "<url>" not in joined and "talkid" not in joined and "keywords" not in joined
    assert "talk 0 : it &apos;s a title" in joined  # <title> tags stripped, Moses escaping, lowercased
    assert "&lt; speaker &gt;" in joined  # prepare-iwslt14.sh keeps <speaker> lines (a known quirk)
    assert "yes ." not in train_en + valid_en  # the 1.5 length-ratio filter of clean-corpus-n
    assert len(train_en) == len(read("train.de")) and len(valid_en) == len(read("valid.de"))
    total = len(train_en) + len(valid_en)
    assert len(valid_en) == total // 5
    assert len(test_en) == 15 and "&apos; nice &apos;" in test_en[0]  # ’ -> ' then escaped; 5 sets x 3
    assert all(line == line.lower() for line in train_en + test_en)


def test_clean_corpus():
    s = [["a"] * 3, [], ["a"] * 10, ["a"] * 200, ["a"] * 4]
    t = [["b"] * 4, ["b"], ["b"] * 5, ["b"] * 200, ["b"] * 6]
    assert D.clean_corpus(s, t, ratio=1.5, max_len=175) == [0, 4]


def test_iwslt_preprocessed_and_from_release(tmp_path):
    pre = cfg(root=str(DATA / "iwslt14" / "prepared"), preprocessed=True, src_lang="de", tgt_lang="en",
              files={"train": "valid"}, holdout={"valid": 2}, cache="unused")
    splits = D.load_splits("iwslt14", pre)
    n_valid_file = len(gzip.open(DATA / "iwslt14" / "prepared" / "valid.en.gz", "rt").read().splitlines())
    assert len(splits["train"]) == n_valid_file - 2 and len(splits["valid"]) == 2 and len(splits["test"]) == 15
    raw = cfg(root=str(DATA / "iwslt14"), src_lang="de", tgt_lang="en", cache=str(tmp_path / "cache"))
    from_release = D.load_split("iwslt14", raw, "test")
    assert from_release.tgt == splits["test"].tgt
    assert (tmp_path / "cache" / "prepared" / ".complete").exists()


def test_gigaword_and_duc_readers():
    root = DATA / "gigaword" / "sumdata"
    splits = D.load_splits("gigaword", cfg(root=str(root), cache="unused"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "valid": 8, "test": 8}
    assert splits["train"].tgt[0] == "australian current account deficit narrows sharply".split()
    assert "#.##" in splits["train"].src[0]
    sample = cfg(root=str(root / "train"), files={"train": ["train.article.txt.gz", "train.title.txt.gz"]},
                 holdout={"valid": 5, "test": 5}, cache="unused")
    carved = D.load_splits("gigaword", sample)
    assert [len(carved[k]) for k in ("train", "valid", "test")] == [50, 5, 5]
    assert carved["test"].src[-1] == splits["train"].src[-1]
    duc = D.load_duc2004(cfg(root=str(root / "DUC2004")))
    assert len(duc) == 6 and len(duc.refs[0]) == 4 and duc.refs[0][1][-1] == "again"


def test_duc_missing_explains_where_to_put_it(tmp_path):
    with pytest.raises(DataMissingError, match="task.duc.root"):
        D.load_duc2004(cfg(root=None))
    with pytest.raises(DataMissingError, match=r"input.txt[\s\S]*task1_ref0.txt"):
        D.load_duc2004(cfg(root=str(tmp_path)))


def test_length_batches_cover_everything_and_keep_order():
    pairs = [([4] * n, [5] * (n % 3 + 1)) for n in [3, 1, 7, 2, 9, 4, 4, 60]]
    train = D.length_batches(pairs, 3, torch.Generator().manual_seed(0), shuffle=True, max_src_len=50)
    assert sorted(i for b in train for i in b.index) == [0, 1, 2, 3, 4, 5, 6]  # the 60-token pair is filtered
    again = D.length_batches(pairs, 3, torch.Generator().manual_seed(0), shuffle=True, max_src_len=50)
    assert [b.index for b in train] == [b.index for b in again]
    evals = D.length_batches(pairs, 3, shuffle=False)
    assert sorted(i for b in evals for i in b.index) == list(range(8))
    for b in evals:
        for row, i in enumerate(b.index):
            n = len(pairs[i][0])
            assert b.src_lengths[row] == n and (b.src[row, :n] == 4).all() and (b.src[row, n:] == 0).all()
            assert b.tgt_in[row, 0] == 2 and b.tgt_out[row, len(pairs[i][1])] == 3


# ------------------------------------------------------------------------------------------------- downloads
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    www = tmp_path / "www"
    raw = www / "multi30k" / "dataset" / "master" / "data" / "task1" / "raw"
    raw.mkdir(parents=True)
    for f in (DATA / "multi30k").iterdir():
        shutil.copy(f, raw / f.name)
    (www / "fairseq" / "data" / "iwslt14").mkdir(parents=True)
    shutil.copy(DATA / "iwslt14" / "de-en.tgz", www / "fairseq" / "data" / "iwslt14" / "de-en.tgz")
    (www / "uc").write_text("<html>Google Drive can't scan this file for viruses</html>")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"base": f"http://127.0.0.1:{httpd.server_address[1]}", "raw": raw, "www": www}
    httpd.shutdown()
    httpd.server_close()


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_multi30k_download_through_a_mirror(server, tmp_path, monkeypatch):
    sums = {f.name: sha(f) for f in (DATA / "multi30k").iterdir()}
    monkeypatch.setattr(D, "MULTI30K_SHA256", sums)
    c = cfg(root=None, mirror=server["base"], src_lang="de", tgt_lang="en", cache=str(tmp_path / "cache"))
    data = D.load_split("multi30k", c, "valid")
    assert len(data) == 12
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["val.de.gz", "val.en.gz"]


def test_multi30k_corrupt_download_leaves_nothing(server, tmp_path, monkeypatch):
    sums = {f.name: sha(f) for f in (DATA / "multi30k").iterdir()}
    monkeypatch.setattr(D, "MULTI30K_SHA256", sums)
    (server["raw"] / "val.de.gz").write_bytes(b"corrupted")
    c = cfg(root=None, mirror=server["base"], src_lang="de", tgt_lang="en", cache=str(tmp_path / "cache"))
    with pytest.raises(ChecksumError):
        D.load_split("multi30k", c, "valid")
    assert not any((tmp_path / "cache").iterdir())  # no file, no temporary left


def test_real_checksums_reject_the_fixtures(server, tmp_path):
    c = cfg(root=None, mirror=server["base"], src_lang="de", tgt_lang="en", cache=str(tmp_path / "cache"))
    with pytest.raises(ChecksumError):  # the recorded sha256 are those of the real Multi30k files
        D.load_split("multi30k", c, "valid")


def test_offline_error_names_the_file(tmp_path, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setattr(D, "MULTI30K_URL", f"http://127.0.0.1:{port}/raw/{{name}}")
    c = cfg(root=None, src_lang="de", tgt_lang="en", cache=str(tmp_path / "cache"))
    with pytest.raises(DataMissingError, match=r"train.de.gz[\s\S]*task.data.root"):
        D.load_split("multi30k", c, "train")


def test_iwslt_download_md5_and_prepare(server, tmp_path, monkeypatch):
    tgz = DATA / "iwslt14" / "de-en.tgz"
    monkeypatch.setattr(D, "IWSLT14_MD5", hashlib.md5(tgz.read_bytes()).hexdigest())
    c = cfg(root=None, mirror=server["base"], src_lang="de", tgt_lang="en", cache=str(tmp_path / "cache"))
    assert len(D.load_split("iwslt14", c, "test")) == 15
    monkeypatch.setattr(D, "IWSLT14_MD5", "0" * 32)
    c2 = cfg(root=None, mirror=server["base"], src_lang="de", tgt_lang="en", cache=str(tmp_path / "cache2"))
    with pytest.raises(DataMissingError, match="md5"):
        D.load_split("iwslt14", c2, "test")
    assert not (tmp_path / "cache2" / "de-en.tgz").exists()


def test_gigaword_drive_confirmation_page_is_a_clear_error(server, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "GIGAWORD_URL", f"{server['base']}/uc")
    c = cfg(root=None, cache=str(tmp_path / "cache"))
    with pytest.raises(DataMissingError, match="by hand"):
        D.load_split("gigaword", c, "train")
    assert not (tmp_path / "cache" / "summary.tar.gz").exists()
