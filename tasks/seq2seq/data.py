"""Data for the sequence-to-sequence experiments: Multi30k, IWSLT14 de-en, Gigaword, DUC-2004.

Every reader returns a ``Parallel`` (source and target token lists, plus the raw target lines when the corpus has
them, used as detokenized BLEU references). Files come either from a local directory (``data.root``: the files in
their canonical layout and names, plain or ``.gz``) or from the canonical URL through ``tasks.download.fetch``
(checksum when known, atomic write, cache under ``data.cache``, ``data.mirror`` tried first). Nothing here reads
``../shared``: real runs point ``task.data.root`` at it.

Sources (canonical):

- Multi30k task 1: the multi30k/dataset GitHub repository, ``data/task1/raw/{train,val,test_2016_flickr}.{en,de,fr}.gz``
  (raw, untokenized), and the WMT17 test sets beside them, ``test_2017_flickr`` and ``test_2017_mscoco`` (captions of
  another image collection: out of domain), evaluated with ``task.extra_test_sets``. sha256 below are of those files
  (gzip headers carry the 2017 names and dates of the repo).
- IWSLT14 de-en: the WIT3 release ``2014-01/texts/de/en/de-en.tgz``; the WIT3 site is gone and fairseq's copy
  (``prepare-iwslt14.sh``) is the one everyone downloads. Its md5 (10936dfdf616504ddbd844e91b94ef4a) is the
  value a third-party script checks; not verified here (no network), so it is checked but a mismatch names it.
  ``prepare_iwslt14`` re-implements ``prepare-iwslt14.sh`` (Moses tokenizer via sacremoses, clean-corpus-n
  ratio 1.5 and 1-175 tokens, lowercase; valid = every 23rd training pair; test = dev2010 + TEDX dev2012 +
  tst2010-2012). ``preprocessed: true`` reads its output ``{train,valid,test}.{de,en}`` directly.
- Gigaword (Rush et al., 2015): Harvard NLP's ``summary.tar.gz`` (the "sumdata" release linked from
  harvardnlp/sent-summary and the OpenNMT-py summarization docs), a Google Drive file
  (id 0B6N7tANPyVeBNmlSX19Ld2xDU1E). Google Drive answers big files with a confirmation page, so the download
  usually has to be done by hand: the error says so. Already lowercased, tokenized, digits as ``#``.
- DUC-2004: licensed by NIST; local files only, in the sumdata layout (``input.txt`` + ``task1_ref{0..3}.txt``).

``data.root`` is a local folder tried first (a mirror such as ``../shared/data/<corpus>``, or the download cache
itself): a file that is not there but has a public copy (``PUBLIC``: the CPU presets' samples, prepared IWSLT14
files, the Gigaword test set; Multi30k from its repository) is downloaded into ``data.cache`` instead, its content
checksum verified. Only files without a public source (DUC-2004, a file named by hand) make a missing root an error.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import tarfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from tasks.download import (
    DataFormatError,
    DataMissingError,
    EmptyDataError,
    fetch,
    inside,
    missing_message,
    obtain,
    verify_once,
)
from tasks.files import atomic_write
from tasks.vocab import Vocab

log = logging.getLogger(__name__)

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"
MULTI30K_SHA256 = {
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "test_2017_flickr.fr.gz": "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496",
    "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
    "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
    "test_2017_mscoco.fr.gz": "754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0",
}
MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
# every Multi30k test set by its file stem: the WMT16 one (``test`` above) and the two WMT17 ones
MULTI30K_TEST_SETS = ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")

# Public copies of the files the CPU presets and the Gigaword test read, by their name under data.root:
# (URL, sha256 of the uncompressed content). Sources are listed in ../shared/README.md of the project's machines.
_NMT_IWSLT = "https://raw.githubusercontent.com/johntzwei/nmt_iwslt/master/iwslt14.tokenized.de-en/tmp"
_HEADLINES = "https://raw.githubusercontent.com/ethanabrooks/headlines/master"
_SEQ3 = "https://raw.githubusercontent.com/cbaziotis/seq3/master/datasets/gigaword"
PUBLIC = {
    "iwslt14": {  # prepare-iwslt14.sh output (tokenized, lowercased): `valid` serves as a small training set
        "valid.de": (f"{_NMT_IWSLT}/valid.de", "3f051579c9d8c7281a6ea8c72ad4ae09dbaa9bb24dfd41166f2c3a3df7cd940a"),
        "valid.en": (f"{_NMT_IWSLT}/valid.en", "e6d7317a9772cd1ed970910c611e9e7dada1f34439269b44a9d801334bff948d"),
        "test.de": (f"{_NMT_IWSLT}/test.de", "e718c783e33160b7d72af8f733756a466e0d0c016eff8ab624c1b0d1d01cbbdf"),
        "test.en": (f"{_NMT_IWSLT}/test.en", "4b127beb9050511a3e6209cd837ff36f623a3a423666b32aba6e208b7330cf4c"),
    },
    "gigaword": {  # the first 1,000 training pairs; the Rush et al. (2015) test set (LDC-derived: never commit it)
        "train.article.sample1000.txt.gz": (f"{_HEADLINES}/test.article.txt",
                                            "a5f8062d45f908375f8094abe726bf250b7a3934893be185f84bc3fcad4f8084"),
        "train.title.sample1000.txt.gz": (f"{_HEADLINES}/train.title.txt",
                                          "64e520c9b2dfe339d0511166b1bcf307c5e2f5587c6f79ec104a8ad6cfe0bef7"),
        "Giga/input.txt": (f"{_SEQ3}/test_1951/input.txt",
                           "578b33eaffe7bf9cab2d84d6f1399fd6f38c1778d194a9877ba66c15232b183c"),
        "Giga/task1_ref0.txt": (f"{_SEQ3}/test_1951/task1_ref0.txt",
                                "15561a71977ee7bd5de4f8f405ea4adcc2f41220b2d9f9db7f71c23c27f8b9d7"),
        # the same files where experiment=gigaword_cpu names them (data.root = the folder above sumdata/)
        "sumdata/Giga/input.txt": (f"{_SEQ3}/test_1951/input.txt",
                                   "578b33eaffe7bf9cab2d84d6f1399fd6f38c1778d194a9877ba66c15232b183c"),
        "sumdata/Giga/task1_ref0.txt": (f"{_SEQ3}/test_1951/task1_ref0.txt",
                                        "15561a71977ee7bd5de4f8f405ea4adcc2f41220b2d9f9db7f71c23c27f8b9d7"),
    },
}


def verified_local(corpus: str, cfg, name: str, path: Path) -> Path:
    """A file found in ``data.root``: checked against its recorded checksum (once, ``verify_once``) when it lies in
    the download cache (``data.cache``, under ``data_dir``: the CPU presets' default root) and has one; a folder of
    your own is used as it is."""
    if cfg.get("cache") and inside(path, cfg.cache):
        if name in PUBLIC.get(corpus, {}):
            return verify_once(path, PUBLIC[corpus][name][1], PUBLIC[corpus][name][0])
        if corpus == "multi30k" and path.name in MULTI30K_SHA256:
            return verify_once(path, MULTI30K_SHA256[path.name], content=False)
    return path


def public_file(corpus: str, cfg, name: str) -> Path | None:
    """``name`` from its public copy (into ``cfg.cache``), when it has one; None otherwise."""
    if name not in PUBLIC.get(corpus, {}):
        return None
    url, content = PUBLIC[corpus][name]
    local = [Path(cfg.root) / Path(name).parent] if cfg.get("root") else []
    return obtain(Path(name).name, url, Path(cfg.cache) / Path(name).parent, local, content_sha=content,
                  hint="or set task.data.root=DIR holding it")

IWSLT14_URL = "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
IWSLT14_MD5 = "10936dfdf616504ddbd844e91b94ef4a"
IWSLT14_TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
                     "IWSLT14.TED.tst2012")  # the order of prepare-iwslt14.sh's `cat`

GIGAWORD_URL = "https://drive.google.com/uc?export=download&id=0B6N7tANPyVeBNmlSX19Ld2xDU1E"
GIGAWORD_FILES = {  # split -> (article, title) inside the sumdata release (plain or .gz accepted)
    "train": ("train/train.article.txt", "train/train.title.txt"),
    "valid": ("train/valid.article.filter.txt", "train/valid.title.filter.txt"),
    "test": ("Giga/input.txt", "Giga/task1_ref0.txt"),
}
DUC2004_HELP = (
    "DUC-2004 is licensed by NIST (https://duc.nist.gov/data.html) and is never downloaded. Put it, in the\n"
    "Rush et al. (2015) 'sumdata' layout, in one directory and pass task.duc.root=DIR:\n"
    "  DIR/input.txt          one article first sentence per line (tokenized, lowercased, digits as #)\n"
    "  DIR/task1_ref0.txt … DIR/task1_ref3.txt   the four reference headlines, line-aligned with input.txt\n"
    "(the 'sumdata/DUC2004/' folder of Harvard NLP's summary.tar.gz has exactly these files)."
)


@dataclass
class Parallel:
    src: list[list[str]]
    tgt: list[list[str]]
    tgt_raw: list[str] | None = None  # untokenized references, when the corpus has them
    refs: list[list[list[str]]] | None = None  # several references per source (DUC-2004)
    name: str = ""
    files: tuple = ()  # the files it was read from (for error messages)

    def __len__(self) -> int:
        return len(self.src)

    def select(self, index) -> "Parallel":
        index = list(index)
        return Parallel([self.src[i] for i in index], [self.tgt[i] for i in index],
                        None if self.tgt_raw is None else [self.tgt_raw[i] for i in index],
                        None if self.refs is None else [self.refs[i] for i in index], self.name, self.files)


# ------------------------------------------------------------------------------------------------- text helpers
def read_lines(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def find_local(root: str | os.PathLike, name: str) -> Path | None:
    """``root/name``, or the same with ``.gz`` added or removed."""
    root = Path(root)
    candidates = [root / name]
    candidates.append(root / name[:-3] if name.endswith(".gz") else root / f"{name}.gz")
    for c in candidates:
        if c.is_file():
            return c
    return None


@lru_cache(maxsize=8)
def _moses(lang: str):
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang=lang)


def tokenize(line: str, lang: str, lowercase: bool = True, escape: bool = False) -> list[str]:
    """Moses tokenization (sacremoses = tokenizer.perl; ``escape=True`` is tokenizer.perl's default)."""
    tokens = _moses(lang).tokenize(line.strip(), escape=escape, return_str=False, aggressive_dash_splits=False)
    return [t.lower() for t in tokens] if lowercase else tokens


# ------------------------------------------------------------------------------------------------- Multi30k
def multi30k_file(cfg, split: str, lang: str) -> Path:
    """``split`` is train / valid / test or a test set's own name (``MULTI30K_TEST_SETS``)."""
    if split not in MULTI30K_SPLITS and split not in MULTI30K_TEST_SETS:
        raise DataMissingError(f"multi30k has no split {split!r}: train, valid, test or one of "
                         f"{', '.join(MULTI30K_TEST_SETS)}")
    name = f"{MULTI30K_SPLITS.get(split, split)}.{lang}.gz"
    if cfg.get("root"):
        path = find_local(cfg.root, name)
        if path is not None:
            return verified_local("multi30k", cfg, name, path)  # not there: downloaded into the cache
    return fetch(MULTI30K_URL.format(name=name), Path(cfg.cache) / name, sha256=MULTI30K_SHA256.get(name),
                 mirrors=_mirrors(cfg), desc=f"multi30k {name}",
                 hint="or set task.data.root=DIR with the Multi30k task1 raw files (train.de.gz, …)")


def load_multi30k(cfg, split: str) -> Parallel:
    src_path, tgt_path = multi30k_file(cfg, split, cfg.src_lang), multi30k_file(cfg, split, cfg.tgt_lang)
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    check_parallel_files(src_path, tgt_path, src_lines, tgt_lines, f"multi30k {split}")
    lc = bool(cfg.get("lowercase", True))
    src = [tokenize(s, cfg.src_lang, lc) for s in src_lines]
    tgt = [tokenize(t, cfg.tgt_lang, lc) for t in tgt_lines]
    raw = [t.strip().lower() if lc else t.strip() for t in tgt_lines]
    return Parallel(src, tgt, raw, name=f"multi30k.{split}", files=(str(src_path), str(tgt_path)))


# ------------------------------------------------------------------------------------------------- IWSLT14
_SEG = re.compile(r'<seg id="[0-9]*">\s*')
_SEG_END = re.compile(r"\s*</seg>\s*")


def _train_tags_lines(lines: list[str]) -> list[str]:
    """prepare-iwslt14.sh on train.tags: drop <url>/<talkid>/<keywords> lines, strip <title>/<description>."""
    out = []
    for line in lines:
        if "<url>" in line or "<talkid>" in line or "<keywords>" in line:
            continue
        for tag in ("<title>", "</title>", "<description>", "</description>"):
            line = line.replace(tag, "")
        out.append(line)
    return out


def _xml_segments(lines: list[str]) -> list[str]:
    """prepare-iwslt14.sh on the XML dev/test files: the <seg id> lines, tags removed, ’ -> '."""
    out = []
    for line in lines:
        if "<seg id" not in line:
            continue
        line = _SEG.sub("", line)
        line = _SEG_END.sub("", line)
        out.append(line.replace("\u2019", "'"))
    return out


def clean_corpus(src: list[list[str]], tgt: list[list[str]], ratio: float = 1.5, min_len: int = 1,
                 max_len: int = 175) -> list[int]:
    """Indices kept by Moses' clean-corpus-n.perl (lengths in [min_len, max_len], length ratio <= ratio)."""
    keep = []
    for i, (s, t) in enumerate(zip(src, tgt)):
        ns, nt = len(s), len(t)
        if ns == 0 or nt == 0 or ns < min_len or nt < min_len or ns > max_len or nt > max_len:
            continue
        if ns / nt > ratio or nt / ns > ratio:
            continue
        keep.append(i)
    return keep


class _Release:
    """Files of the IWSLT14 release, from the .tgz or from its extracted ``de-en/`` directory."""

    def __init__(self, path: Path):
        self.path = path
        self.tar = tarfile.open(path) if path.is_file() else None
        self.names = {}
        if self.tar is not None:
            for m in self.tar.getmembers():
                if m.isfile():
                    self.names[m.name.rsplit("/", 1)[-1]] = m.name
        else:
            for p in sorted(path.rglob("*")):
                if p.is_file():
                    self.names[p.name] = str(p)

    def lines(self, name: str) -> list[str]:
        if name not in self.names:
            raise DataMissingError(f"{self.path}: no file {name} (is it the IWSLT14 de-en release, de-en.tgz?)")
        if self.tar is not None:
            data = self.tar.extractfile(self.names[name]).read()
        else:
            data = Path(self.names[name]).read_bytes()
        lines = data.decode("utf-8").split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines


def prepare_iwslt14(release: str | os.PathLike, out_dir: str | os.PathLike, src: str = "de", tgt: str = "en",
                    max_len: int = 175, ratio: float = 1.5, valid_every: int = 23) -> Path:
    """prepare-iwslt14.sh (without BPE) in Python: writes out_dir/{train,valid,test}.{de,en}; returns out_dir."""
    out_dir = Path(out_dir)
    done = out_dir / ".complete"
    if done.exists():
        return out_dir
    rel = _Release(Path(release))
    pair = f"{src}-{tgt}"
    tok = {}
    for lang in (src, tgt):
        lines = _train_tags_lines(rel.lines(f"train.tags.{pair}.{lang}"))
        tok[lang] = [tokenize(line, lang, lowercase=False, escape=True) for line in lines]
    if len(tok[src]) != len(tok[tgt]):
        raise DataMissingError(f"{release}: train.tags files are not aligned ({len(tok[src])} vs {len(tok[tgt])})")
    keep = clean_corpus(tok[src], tok[tgt], ratio, 1, max_len)
    train = {lang: [" ".join(tok[lang][i]).lower() for i in keep] for lang in (src, tgt)}
    splits = {"train": {}, "valid": {}, "test": {}}
    for lang in (src, tgt):
        splits["valid"][lang] = [s for n, s in enumerate(train[lang], 1) if n % valid_every == 0]
        splits["train"][lang] = [s for n, s in enumerate(train[lang], 1) if n % valid_every != 0]
        test = []
        for name in IWSLT14_TEST_SETS:
            for line in _xml_segments(rel.lines(f"{name}.{pair}.{lang}.xml")):
                test.append(" ".join(tokenize(line, lang, lowercase=True, escape=True)))
        splits["test"][lang] = test
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, by_lang in splits.items():
        for lang, lines in by_lang.items():
            atomic_write(out_dir / f"{split}.{lang}", "".join(line + "\n" for line in lines))
    done.write_text("prepare-iwslt14 done\n")
    return out_dir


def iwslt14_dir(cfg) -> Path:
    """The directory holding {train,valid,test}.{de,en}: data.root (preprocessed), or prepared from the release."""
    if cfg.get("root") and cfg.get("preprocessed", False):
        return Path(cfg.root)
    if cfg.get("root"):
        root = Path(cfg.root)
        release = find_local(root, "de-en.tgz") or (root / "de-en" if (root / "de-en").is_dir() else None)
        if release is None:
            raise DataMissingError(missing_message(root / "de-en.tgz", IWSLT14_URL, hint=(
                "task.data.root holds the IWSLT14 release (de-en.tgz or its de-en/ folder), or the preprocessed "
                "{train,valid,test}.{de,en}[.gz] with task.data.preprocessed=true")))
        return prepare_iwslt14(release, Path(cfg.cache) / "prepared")
    archive = fetch(IWSLT14_URL, Path(cfg.cache) / "de-en.tgz", mirrors=_mirrors(cfg), desc="IWSLT14 de-en.tgz",
                    hint="or set task.data.root=DIR holding de-en.tgz")
    if cfg.get("check_md5", True):
        got = _md5(archive)
        if got != IWSLT14_MD5:
            archive.unlink()
            raise DataMissingError(f"{IWSLT14_URL}: md5 {got}, expected {IWSLT14_MD5}; the file was removed")
    return prepare_iwslt14(archive, Path(cfg.cache) / "prepared")


def load_iwslt14(cfg, split: str) -> Parallel:
    directory = iwslt14_dir(cfg)
    name = cfg.get("files", {}).get(split, split) if cfg.get("files") else split
    lines, paths = {}, {}
    for lang in (cfg.src_lang, cfg.tgt_lang):
        path = find_local(directory, f"{name}.{lang}")
        if path is not None and cfg.get("preprocessed", False):  # (prepared here from a release: our own output)
            path = verified_local("iwslt14", cfg, f"{name}.{lang}", path)
        if path is None and cfg.get("preprocessed", False):
            path = public_file("iwslt14", cfg, f"{name}.{lang}")
        if path is None:
            raise DataMissingError(missing_message(Path(directory) / f"{name}.{lang}", None, hint=(
                "the output of prepare-iwslt14.sh: {train,valid,test}.{de,en}, tokenized and lowercased")))
        lines[lang], paths[lang] = read_lines(path), path
    check_parallel_files(paths[cfg.src_lang], paths[cfg.tgt_lang], lines[cfg.src_lang], lines[cfg.tgt_lang],
                         f"iwslt14 {split}")
    lc = bool(cfg.get("lowercase", True))
    conv = (lambda s: s.lower()) if lc else (lambda s: s)
    src = [conv(s).split() for s in lines[cfg.src_lang]]
    tgt = [conv(t).split() for t in lines[cfg.tgt_lang]]
    return Parallel(src, tgt, None, name=f"iwslt14.{split}",
                    files=(str(paths[cfg.src_lang]), str(paths[cfg.tgt_lang])))


# ------------------------------------------------------------------------------------------------- Gigaword / DUC
def _giga_normalize(line: str, lowercase: bool, digits: bool) -> list[str]:
    line = line.strip()
    if lowercase:
        line = line.lower()
    if digits:
        line = re.sub(r"\d", "#", line)
    return line.split()


def gigaword_files(cfg, split: str) -> tuple[Path, Path]:
    files = cfg.get("files") or {}
    article, title = files.get(split) or GIGAWORD_FILES[split]
    if cfg.get("root"):
        root = Path(cfg.root)
    else:
        root = Path(cfg.cache) / "sumdata"
        if not (root / ".complete").exists():
            if not cfg.get("sha256"):  # never invented: no published checksum of the release is known to us
                log.warning("Gigaword: summary.tar.gz has no recorded sha256, so the download (or a mirror's copy) "
                            "is not verified; set task.data.sha256=<sha256 of the file you trust> to verify it")
            archive = fetch(GIGAWORD_URL, Path(cfg.cache) / "summary.tar.gz", sha256=cfg.get("sha256"),
                            mirrors=_mirrors(cfg),
                            desc="Gigaword summary.tar.gz", hint=(
                                "Google Drive usually needs a browser for this file: download summary.tar.gz from "
                                "https://drive.google.com/file/d/0B6N7tANPyVeBNmlSX19Ld2xDU1E/view, extract it, and "
                                "set task.data.root=DIR/sumdata"))
            _extract_sumdata(archive, root)
    found = []
    for name in (article, title):
        path = find_local(root, name)
        if path is not None:
            path = verified_local("gigaword", cfg, name, path)
        if path is None:
            path = public_file("gigaword", cfg, name)
        if path is None:
            raise DataMissingError(missing_message(root / name, None, hint=(
                "Gigaword in the Rush et al. (2015) sumdata layout: train/train.article.txt, train/train.title.txt, "
                "train/valid.{article,title}.filter.txt, Giga/input.txt + Giga/task1_ref0.txt (plain or .gz); "
                "other names via task.data.files")))
        found.append(path)
    return found[0], found[1]


def _extract_sumdata(archive: Path, root: Path) -> None:
    """The files of Harvard NLP's archive under ``root`` (its leading ``sumdata/`` dropped). Every member is checked
    before anything is written: an absolute name, a ``..``, or a link pointing outside ``root`` is refused (an
    archive from a mirror or an intercepted download must not write elsewhere); links inside are not extracted."""
    try:
        tar = tarfile.open(archive)
    except tarfile.ReadError:
        archive.unlink()
        raise DataMissingError(
            f"{archive} is not a tar archive (Google Drive sent its confirmation page instead of the file); it was "
            "removed. Download summary.tar.gz by hand from "
            "https://drive.google.com/file/d/0B6N7tANPyVeBNmlSX19Ld2xDU1E/view, extract it, and set "
            "task.data.root=DIR/sumdata") from None
    root.mkdir(parents=True, exist_ok=True)
    with tar:
        files = [(m, _member_destination(archive, m, root)) for m in tar.getmembers()]
        for m, dest in files:
            if not m.isfile() or dest is None:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dest, tar.extractfile(m).read())
    (root / ".complete").write_text("extracted\n")


def _member_destination(archive: Path, member: tarfile.TarInfo, root: Path) -> Path | None:
    """Where ``member`` goes under ``root`` (None: nothing to write), or a ``DataMissingError`` naming it when it
    would write, or point, outside ``root``."""
    rel = Path(member.name)
    parts = rel.parts[1:] if rel.parts and rel.parts[0] == "sumdata" else rel.parts
    dest = root.joinpath(*parts) if parts else root
    unsafe = rel.is_absolute() or ".." in rel.parts or not inside(dest, root)
    if member.issym() or member.islnk():
        target = Path(member.linkname)
        base = dest.parent if member.issym() else root  # a hard link's target is a member name
        unsafe = unsafe or target.is_absolute() or ".." in target.parts or not inside(base / target, root)
    if unsafe:
        raise DataMissingError(
            f"{archive}: member {member.name!r}{' -> ' + repr(member.linkname) if member.linkname else ''} would "
            f"write or point outside {root}; nothing was extracted. The archive is not Harvard NLP's release: "
            f"delete it and download summary.tar.gz from a source you trust (or set task.data.root=DIR/sumdata).")
    return dest if parts else None


def load_gigaword(cfg, split: str) -> Parallel:
    article, title = gigaword_files(cfg, split)
    src_lines, tgt_lines = read_lines(article), read_lines(title)
    check_parallel_files(article, title, src_lines, tgt_lines, f"gigaword {split}")
    lc, digits = bool(cfg.get("lowercase", True)), bool(cfg.get("digits_to_hash", True))
    src = [_giga_normalize(s, lc, digits) for s in src_lines]
    tgt = [_giga_normalize(t, lc, digits) for t in tgt_lines]
    return Parallel(src, tgt, None, name=f"gigaword.{split}", files=(str(article), str(title)))


def load_duc2004(cfg) -> Parallel:
    """DUC-2004 task 1 from a local directory (never downloaded): input.txt + task1_ref{0..3}.txt."""
    root = cfg.get("root") if cfg is not None else None
    if not root:
        raise DataMissingError("DUC-2004 evaluation asked for but task.duc.root is not set.\n" + DUC2004_HELP)
    root = Path(root)
    inp = find_local(root, "input.txt")
    if inp is None:
        raise DataMissingError(f"DUC-2004: {root / 'input.txt'} not found.\n" + DUC2004_HELP)
    refs_files = [find_local(root, f"task1_ref{k}.txt") for k in range(int(cfg.get("n_refs", 4)))]
    refs_files = [p for p in refs_files if p is not None]
    if not refs_files:
        raise DataMissingError(f"DUC-2004: no {root / 'task1_ref0.txt'} (references).\n" + DUC2004_HELP)
    lc, digits = bool(cfg.get("lowercase", True)), bool(cfg.get("digits_to_hash", True))
    src = [_giga_normalize(s, lc, digits) for s in read_lines(inp)]
    refs_lines = [read_lines(p) for p in refs_files]
    for p, lines in zip(refs_files, refs_lines):
        check_parallel_files(inp, p, src, lines, "DUC-2004")
    refs = [[_giga_normalize(lines[i], lc, digits) for lines in refs_lines] for i in range(len(src))]
    return Parallel(src, [r[0] for r in refs], None, refs=refs, name="duc2004",
                    files=(str(inp), *map(str, refs_files)))


LOADERS = {"multi30k": load_multi30k, "iwslt14": load_iwslt14, "gigaword": load_gigaword}
# test sets a corpus has besides its `test` split, loadable by name (``task.extra_test_sets``)
EXTRA_TEST_SETS = {"multi30k": MULTI30K_TEST_SETS}


def load_split(corpus: str, cfg, split: str) -> Parallel:
    return LOADERS[corpus](cfg, split)


def load_splits(corpus: str, cfg) -> dict[str, Parallel]:
    """train/valid/test; ``cfg.holdout`` {valid: n, test: n} carves those splits from the end of train instead
    (for small real samples that have no split of their own); ``cfg.limit`` {split: n} keeps the first n pairs."""
    holdout = dict(cfg.get("holdout") or {})
    train = load_split(corpus, cfg, "train")
    out = {}
    n_test, n_valid = int(holdout.get("test") or 0), int(holdout.get("valid") or 0)
    if n_test or n_valid:
        if n_test + n_valid >= len(train):
            raise EmptyDataError(f"{corpus}: holdout {holdout} leaves no training pairs out of {len(train)}")
        end = len(train)
        if n_test:
            out["test"] = train.select(range(end - n_test, end))
            end -= n_test
        if n_valid:
            out["valid"] = train.select(range(end - n_valid, end))
            end -= n_valid
        train = train.select(range(end))
    out["train"] = train
    for split in ("valid", "test"):
        if split not in out:
            out[split] = load_split(corpus, cfg, split)
    limit = dict(cfg.get("limit") or {})
    for split, n in limit.items():
        if n and split in out:
            out[split] = out[split].select(range(min(int(n), len(out[split]))))
    return out


# ------------------------------------------------------------------------------------------------- tensors
@dataclass
class Batch:
    src: torch.Tensor  # (B, S) padded ids
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) <bos> y_1 … y_n (padded)
    tgt_out: torch.Tensor  # (B, T) y_1 … y_n <eos> (padded)
    index: list[int] = field(default_factory=list)  # positions in the Parallel

    def to(self, device) -> "Batch":
        return Batch(self.src.to(device), self.src_lengths.to(device), self.tgt_in.to(device), self.tgt_out.to(device),
                     self.index)

    def __len__(self) -> int:
        return self.src.size(0)


def encode_pairs(data: Parallel, src_vocab: Vocab, tgt_vocab: Vocab) -> list[tuple[list[int], list[int]]]:
    return [(src_vocab.encode(s), tgt_vocab.encode(t)) for s, t in zip(data.src, data.tgt)]


def collate(pairs: list[tuple[list[int], list[int]]], index: list[int], pad: int = 0, bos: int = 2,
            eos: int = 3) -> Batch:
    B = len(pairs)
    S = max(max(len(s) for s, _ in pairs), 1)
    T = max(len(t) for _, t in pairs) + 1
    src = torch.full((B, S), pad, dtype=torch.long)
    tin = torch.full((B, T), pad, dtype=torch.long)
    tout = torch.full((B, T), pad, dtype=torch.long)
    lengths = torch.zeros(B, dtype=torch.long)
    for b, (s, t) in enumerate(pairs):
        if s:
            src[b, : len(s)] = torch.tensor(s)
        lengths[b] = max(len(s), 1)  # an empty source reads one <pad>; its attention row is that position
        tin[b, : len(t) + 1] = torch.tensor([bos] + t)
        tout[b, : len(t) + 1] = torch.tensor(t + [eos])
    return Batch(src, lengths, tin, tout, list(index))


def length_batches(pairs, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True,
                   max_src_len: int | None = None, max_tgt_len: int | None = None, pad: int = 0) -> list[Batch]:
    """Batches of similar source length. Training (shuffle): pairs over the length limits are dropped (OpenNMT-py's
    src/tgt_seq_length filter), pairs are shuffled then sorted by length within pools of 100 batches, and the
    batch order is shuffled. Evaluation (no shuffle): every pair kept, sorted by length, ``index`` maps back."""
    index = list(range(len(pairs)))
    if shuffle:
        index = [i for i in index
                 if (max_src_len is None or len(pairs[i][0]) <= max_src_len)
                 and (max_tgt_len is None or len(pairs[i][1]) <= max_tgt_len)]
        perm = torch.randperm(len(index), generator=generator).tolist()
        index = [index[p] for p in perm]
        pool = batch_size * 100
        ordered = []
        for start in range(0, len(index), pool):
            chunk = index[start: start + pool]
            ordered += sorted(chunk, key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
        index = ordered
    else:
        index = sorted(index, key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    batches = [collate([pairs[i] for i in index[s: s + batch_size]], index[s: s + batch_size], pad=pad)
               for s in range(0, len(index), batch_size)]
    if shuffle:
        order = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[o] for o in order]
    return batches


# ------------------------------------------------------------------------------------------------- misc
def check_parallel_files(src_path, tgt_path, src_lines: list, tgt_lines: list, what: str) -> None:
    """Refuse, naming the file, an empty file or a source and a target whose line counts differ (line i of one is
    the translation of line i of the other: a missing line shifts every pair after it)."""
    for path, lines in ((src_path, src_lines), (tgt_path, tgt_lines)):
        if not lines:
            raise EmptyDataError(f"{what}: {path} is empty (no line): nothing to train or evaluate on")
    if len(src_lines) != len(tgt_lines):
        raise DataFormatError(
            f"{what}: source and target files are not line-aligned: {src_path} has {len(src_lines)} lines, "
            f"{tgt_path} has {len(tgt_lines)} (line i of one must be the pair of line i of the other)")


def _mirrors(cfg) -> list[str]:
    m = cfg.get("mirror")
    if not m:
        return []
    return [m] if isinstance(m, str) else list(m)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


