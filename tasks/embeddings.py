"""Pre-trained GloVe vectors in Stanford's text format (``word v1 ... vd`` a line), from a .txt, a .txt.gz or a .zip.

    >>> vectors = read_glove("glove.6B.50d.txt.gz", wanted={"cat", "dog"})     # {word: tensor(50)}
    >>> weight, info = embedding_matrix(vocab, vectors, dim=50)                  # tensor(len(vocab), 50)

Lookup: the exact token first, then its lower-cased form (GloVe 6B is uncased; 840B is cased).
Out-of-vocabulary rows (tokens without a vector, and <unk>/<bos>/<eos>): ``oov="normal"`` draws them from
N(0, oov_std²) with a fixed generator (``seed``) so that a frozen table still tells OOV words apart, the common
practice for SNLI models with fixed GloVe; ``oov="zeros"`` sets them to zero. <pad> is always zero.
The table is frozen by default in the models (``nn.Embedding.from_pretrained(weight, freeze=True)``).
Some 840B lines have spaces inside the word: the last ``dim`` fields are the vector, the rest the word.

**Parsed once.** ``glove_file`` parses the text (2.2M lines for 840B) into a tensor file
``<cache>/<file>[.<member>].pt`` (``{"words": [...], "vectors": (n, dim)}``) the first time and returns that;
``read_glove`` reads either form. The tensor file is rebuilt when the text file's size or time changes.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .download import DataMissingError, fetch, open_text
from .files import atomic_open, atomic_write, load_tensors
from .vocab import Vocab

log = logging.getLogger(__name__)


def read_glove(path: str | os.PathLike, wanted: set[str] | None = None, dim: int | None = None,
               member: str | None = None) -> dict[str, torch.Tensor]:
    """Vectors of the words in ``wanted`` (and of their lower-cased forms; every word if ``wanted`` is None), from
    a GloVe text file or from its parsed tensor file (``.pt``, see ``glove_file``)."""
    path = Path(path)
    if not path.exists():
        raise DataMissingError(f"GloVe file missing: {path}")
    keys = None if wanted is None else set(wanted) | {w.lower() for w in wanted}
    vectors: dict[str, torch.Tensor] = {}
    if path.suffix == ".pt":
        try:
            table = load_tensors(path)  # never runs code from the file (a cache in a shared data dir)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:  # damaged (UnsafeFileError: raised)
            raise DataMissingError(f"{path} cannot be read ({type(error).__name__}): delete it, it is rebuilt from "
                                   f"the GloVe text file") from None
        rows = table.get("vectors") if isinstance(table, dict) else None
        words = table.get("words") if isinstance(table, dict) else None
        if not (torch.is_tensor(rows) and rows.dim() == 2 and isinstance(words, list) and len(words) == len(rows)):
            raise DataMissingError(f"{path} is not a parsed GloVe table ({{'words': [...], 'vectors': (n, dim)}}): "
                                   f"delete it, it is rebuilt from the GloVe text file")
        if dim is not None and rows.shape[1] != dim:
            raise ValueError(f"{path}: vectors of {rows.shape[1]} dimensions, expected {dim}")
        for i, word in enumerate(words):
            if (keys is None or word in keys) and word not in vectors:
                vectors[word] = rows[i].clone()
        return vectors
    for word, vector in iter_glove(path, dim, member, keys):
        if word not in vectors:
            vectors[word] = torch.tensor(vector, dtype=torch.float32)
    return vectors


def iter_glove(path: Path, dim: int | None = None, member: str | None = None, keys: set[str] | None = None):
    """(word, list of floats) for each line of a GloVe text file whose word is in ``keys`` (every line if None)."""
    with open_text(path, member) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip(" ")
            if not line:
                continue
            if dim is None:
                dim = len(line.split(" ")) - 1
                if lineno == 1 and dim == 1:  # word2vec-style header "count dim"
                    dim = None
                    continue
            parts = line.rsplit(" ", dim)
            if len(parts) != dim + 1:
                raise ValueError(f"{path}, line {lineno}: expected a word and {dim} numbers")
            word = parts[0]
            if keys is not None and word not in keys:
                continue
            try:
                yield word, [float(x) for x in parts[1:]]
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: not a number in the vector of {word!r}") from None


def glove_tensor_file(text: Path, cache_dir: str | os.PathLike, member: str | None = None,
                      dim: int | None = None) -> Path:
    """``text`` parsed once into ``<cache_dir>/<name>[.<member>].pt``; rebuilt when ``text`` changes."""
    stat = text.stat()
    stamp = {"source": str(text.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "member": member}
    out = Path(cache_dir) / f"{text.name}{'.' + member if member else ''}.pt"
    sidecar = out.with_suffix(".json")
    try:
        if out.exists() and json.loads(sidecar.read_text()) == stamp:
            return out
    except (OSError, ValueError):
        pass
    log.info(f"parsing {text}{':' + member if member else ''} once into {out}")
    words, rows = [], []
    for word, vector in iter_glove(text, dim, member):
        words.append(word)
        rows.append(np.asarray(vector, dtype=np.float32))
    vectors = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, dim or 0)
    with atomic_open(out) as f:
        torch.save({"words": words, "vectors": vectors}, f)
    atomic_write(sidecar, json.dumps(stamp))
    return out


def embedding_matrix(vocab: Vocab, vectors: dict[str, torch.Tensor], dim: int, oov: str = "normal",
                     oov_std: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """A ``(len(vocab), dim)`` table; ``info`` = {"found": n, "oov": n, "coverage": found / (len(vocab) - 4)}."""
    if oov not in ("normal", "zeros"):
        raise ValueError(f"oov must be 'normal' or 'zeros', got {oov!r}")
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(len(vocab), dim, generator=generator) * oov_std
    if oov == "zeros":
        weight.zero_()
    weight[vocab.pad_id] = 0.0
    found = 0
    for i, token in enumerate(vocab.itos[4:], 4):
        vec = vectors.get(token)
        if vec is None:
            vec = vectors.get(token.lower())
        if vec is not None:
            if vec.numel() != dim:
                raise ValueError(f"vector of {token!r} has {vec.numel()} dimensions, expected {dim}")
            weight[i] = vec
            found += 1
    words = max(len(vocab) - 4, 1)
    return weight, {"found": found, "oov": len(vocab) - 4 - found, "coverage": found / words}


def check_archive(path: Path, url: str) -> None:
    """A downloaded ``.zip`` or ``.gz`` that is not one (a proxy's or a host's HTML error page served with status
    200) is removed from the cache, so the next run downloads it again instead of failing the same way, and is a
    ``DataMissingError`` saying what came instead."""
    import zipfile

    name = path.name.lower()
    with open(path, "rb") as f:
        head = f.read(64)
    if name.endswith(".zip"):
        ok = zipfile.is_zipfile(path)
    else:
        ok = head[:2] == b"\x1f\x8b" if name.endswith(".gz") else True
    if ok:
        return
    what = "an HTML page" if head.lstrip()[:1] == b"<" else f"{path.stat().st_size:,} bytes beginning {head[:16]!r}"
    path.unlink()
    raise DataMissingError(
        f"{url} sent {what}, not a {name.rsplit('.', 1)[-1]} archive (an error page served as the file?); removed "
        f"from the cache ({path}). Try again later, use a mirror (embeddings.mirror=URL), or point embeddings.path "
        f"at a GloVe file you have.")


def glove_file(cfg: dict, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """The parsed tensor file of the GloVe vectors an embeddings config names (see configs/embeddings/*.yaml):
    ``cfg["path"]`` when that file exists (a local copy: .txt, .txt.gz or .zip), else ``cfg["url"]`` downloaded
    into ``cache_dir`` (and ``cfg["member"]`` read from the zip). Parsed once, into ``cache_dir``."""
    member = cfg.get("member")
    path = Path(cfg["path"]).expanduser() if cfg.get("path") else None
    if path is not None and not path.exists() and not cfg.get("url"):
        raise DataMissingError(
            f"GloVe file missing: {path} (embeddings.path). Point embeddings.path at a GloVe text file (.txt, "
            f".txt.gz or .zip), or set embeddings.url to its canonical zip."
        )
    if path is not None and path.exists():
        text = path
        member = member if path.name.lower().endswith(".zip") else None
    else:
        url = cfg["url"]
        if path is not None:  # a typo here would otherwise cost a large download without a word
            log.warning(f"embeddings.path={path} does not exist: using the canonical vectors instead, {url} "
                        f"(downloaded into {cache_dir} unless already there). Check embeddings.path if you meant "
                        f"a local file.")
        text = fetch(url, Path(cache_dir) / url.rsplit("/", 1)[-1], sha256=cfg.get("sha256"),
                     mirrors=cfg.get("mirror") or (), progress=progress,
                     hint="or set embeddings.path=FILE (a GloVe .txt/.txt.gz/.zip you have), or embeddings.mirror=URL")
        check_archive(text, url)
    return glove_tensor_file(text, cache_dir, member=member, dim=cfg.get("dim"))
