"""SNLI 1.0: where the files are, and reading them.

Canonical source: https://nlp.stanford.edu/projects/snli/snli_1.0.zip (sha256 below), members
``snli_1.0/snli_1.0_{train,dev,test}.jsonl``. Without ``data.root`` the zip is downloaded once to
``<data_dir>/snli/snli_1.0.zip`` (verified, atomic) and the jsonl members are read from inside it.
With ``data.root=DIR`` the files named in ``data.files`` are read from DIR: each may be plain ``.jsonl``, ``.jsonl.gz``,
or a member of ``DIR/snli_1.0.zip``. A split whose file is ``null`` is absent; if that is ``test``,
``data.test_from_valid`` (a fraction) holds out the *last* part of the validation file as the test split
(contiguous, so that the three hypotheses of a premise stay together).

Reading: one JSON object a line; examples whose ``gold_label`` is ``-`` (no annotator consensus) are dropped, as is
conventional. Tokens: the leaves of ``sentence{1,2}_binary_parse`` (the corpus' own PTB tokenization) when present,
else a regex tokenizer over ``sentence{1,2}``. A malformed line raises ``SNLIFormatError`` naming file and line.

Files of ``PUBLIC`` (the CPU preset's 1% training sample and the dev set) that are not in ``data.root`` are
downloaded from their public copies into ``<data_dir>/snli/`` (content checksum verified): ``data.root`` is then a
local mirror (e.g. ``../shared/data/snli``), not a requirement.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..download import DataFormatError, DataMissingError, EmptyDataError, fetch, obtain, open_text

log = logging.getLogger(__name__)

URL = "https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
# sha256 of snli_1.0.zip as recorded by ParlAI (parlai/tasks/snli/build.py) and NLIDatasets.jl (src/snli.jl).
SHA256 = "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e"
ZIP_DIR = "snli_1.0"
LABELS = ("entailment", "neutral", "contradiction")
FILES = {"train": "snli_1.0_train.jsonl", "valid": "snli_1.0_dev.jsonl", "test": "snli_1.0_test.jsonl"}
# public copies of the CPU-scale files (uclnlp/inferbeddings, CC BY-SA 4.0 as SNLI): sha256 of the uncompressed
# content (a plain or a .gz copy both pass)
_INFERBEDDINGS = "https://raw.githubusercontent.com/uclnlp/inferbeddings/master/data/snli"
PUBLIC = {
    "snli_1.0_train_0.01.jsonl.gz": (f"{_INFERBEDDINGS}/fractions/snli_1.0_train_0.01.jsonl.gz",
                                     "d1aa98e60f8986fb2115bb1ec1bc2ef59583c20fdc6f64e3fc6239581dd23368"),
    "snli_1.0_dev.jsonl.gz": (f"{_INFERBEDDINGS}/snli_1.0_dev.jsonl.gz",
                              "9c03faff70182ef086ebfeed2cffbabb5fcc6a84a8b3314decbbb5b01f07f4bf"),
}
_TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


class SNLIFormatError(DataFormatError):
    """A line of an SNLI jsonl file that cannot be read; the message names the file and the line."""


@dataclass
class Example:
    premise: list[str]
    hypothesis: list[str]
    label: int


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def parse_leaves(parse: str) -> list[str]:
    return [t for t in parse.replace("(", " ").replace(")", " ").split()]


def read_jsonl(path: str | Path, member: str | None = None, lowercase: bool = False) -> list[Example]:
    where = f"{path}:{member}" if member else str(path)
    examples, lines, no_consensus = [], 0, 0
    with open_text(path, member) as f:
        lineno = 0
        while True:
            lineno += 1
            try:
                line = f.readline()
            except (UnicodeDecodeError, EOFError, OSError) as error:
                raise SNLIFormatError(f"{where}, line {lineno}: cannot read ({error})") from None
            if not line:
                break
            if not line.strip():
                continue
            lines += 1
            try:
                row = json.loads(line)
                gold = row["gold_label"]
                if gold == "-":
                    no_consensus += 1
                    continue
                if gold not in LABELS:
                    raise ValueError(f"unknown gold_label {gold!r}")
                sides = []
                for k in ("1", "2"):
                    parse = row.get(f"sentence{k}_binary_parse")
                    tokens = parse_leaves(parse) if parse else tokenize(row[f"sentence{k}"])
                    sides.append([t.lower() for t in tokens] if lowercase else tokens)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
                kind = "missing key" if isinstance(error, KeyError) else "malformed line"
                raise SNLIFormatError(f"{where}, line {lineno}: {kind}: {error}") from None
            examples.append(Example(sides[0], sides[1], LABELS.index(gold)))
    if not examples:
        why = (f"every one of its {lines} examples has gold_label '-' (no annotator consensus: dropped)" if lines
               else "it is empty (no line)")
        raise EmptyDataError(f"SNLI: no usable example in {where}: {why}")
    return examples


def _in_root(root: Path, name: str, split: str) -> tuple[Path, str | None]:
    base = name[:-3] if name.endswith(".gz") else name
    for candidate in (root / name, root / base, root / f"{base}.gz"):
        if candidate.exists():
            return candidate, None
    zip_path = root / "snli_1.0.zip"
    if zip_path.exists():
        import zipfile

        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
        for member in (f"{ZIP_DIR}/{base}", base):
            if member in names:
                return zip_path, member
    raise DataMissingError(
        f"SNLI {split} file missing: no {name} (or {base}, {base}.gz, or snli_1.0.zip) in {root} (task.data.root).\n"
        f"  put {name} at {root / name}; it is in {URL} (member {ZIP_DIR}/{base}),\n"
        f"  or set task.data.files.{split}=<another file name in {root}> (null: no {split} split)"
    )


def locate(cfg: dict, data_dir: str | Path, progress: bool = True) -> dict[str, tuple[Path, str | None] | None]:
    """{split: (path, zip member or None) or None} for the splits of ``cfg["files"]``."""
    files = {**FILES, **(cfg.get("files") or {})}
    if cfg.get("root"):
        root = Path(cfg["root"]).expanduser()
        out = {}
        for split, name in files.items():
            if not name:
                out[split] = None
                continue
            if name in PUBLIC:  # found in root (a mirror) or downloaded; the content is checked either way
                url, content = PUBLIC[name]
                out[split] = (obtain(name, url, Path(data_dir) / "snli", [root], content_sha=content,
                                     progress=progress, hint="or set task.data.root=DIR holding it"), None)
            else:
                out[split] = _in_root(root, name, split)
        return out
    dest = Path(data_dir) / "snli" / "snli_1.0.zip"
    zip_path = fetch(cfg.get("url") or URL, dest, sha256=cfg.get("sha256", SHA256), mirrors=cfg.get("mirror") or (),
                     progress=progress, desc="snli_1.0.zip",
                     hint="or set task.data.root=DIR (a folder with the SNLI jsonl files), or task.data.mirror=URL")
    out = {}
    for split, name in files.items():
        if not name:
            out[split] = None
            continue
        base = name[:-3] if name.endswith(".gz") else name
        out[split] = (zip_path, f"{ZIP_DIR}/{base}")
    return out


def load(cfg: dict, data_dir: str | Path, progress: bool = True) -> dict[str, list[Example]]:
    """{"train": [...], "valid": [...], "test": [...]} (see the module docstring for the options)."""
    where = locate(cfg, data_dir, progress)
    lowercase = bool(cfg.get("lowercase", False))
    splits = {s: read_jsonl(p, m, lowercase) for s, (p, m) in ((s, w) for s, w in where.items() if w)}
    for split in ("train", "valid"):
        if split not in splits:
            raise DataMissingError(f"SNLI: task.data.files.{split} is null; a {split} split is required")
    limit = cfg.get("max_examples") or {}
    for split, n in limit.items():
        if n and split in splits:
            splits[split] = splits[split][:n]
    if "test" not in splits:
        fraction = cfg.get("test_from_valid")
        if fraction:
            valid = splits["valid"]
            cut = len(valid) - int(round(len(valid) * float(fraction)))
            splits["valid"], splits["test"] = valid[:cut], valid[cut:]
            for split in ("valid", "test"):
                if not splits[split]:
                    path, member = where["valid"]
                    raise EmptyDataError(
                        f"SNLI: task.data.test_from_valid={fraction} leaves the {split} split empty ({len(valid)} "
                        f"examples in {f'{path}:{member}' if member else path}); use a fraction in (0, 1) that keeps "
                        f"both halves non-empty")
        else:
            splits["test"] = splits["valid"]
            log.info("no test file and no test_from_valid: the test metrics are the validation metrics")
    return splits
