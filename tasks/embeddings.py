"""Pre-trained GloVe vectors in Stanford's text format (``word v1 ... vd`` a line), from a .txt, a .txt.gz or a .zip.

    >>> vectors = read_glove("glove.6B.50d.txt.gz", wanted={"cat", "dog"})     # {word: tensor(50)}
    >>> weight, info = embedding_matrix(vocab, vectors, dim=50)                  # tensor(len(vocab), 50)

Lookup: the exact token first, then its lower-cased form (GloVe 6B is uncased; 840B is cased).
Out-of-vocabulary rows (tokens without a vector, and <unk>/<bos>/<eos>): ``oov="normal"`` draws them from
N(0, oov_std²) with a fixed generator (``seed``) so that a frozen table still tells OOV words apart, the common
practice for SNLI models with fixed GloVe; ``oov="zeros"`` sets them to zero. <pad> is always zero.
The table is frozen by default in the models (``nn.Embedding.from_pretrained(weight, freeze=True)``).
Some 840B lines have spaces inside the word: the last ``dim`` fields are the vector, the rest the word.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .download import DataMissingError, fetch, open_text
from .vocab import Vocab


def read_glove(path: str | os.PathLike, wanted: set[str] | None = None, dim: int | None = None,
               member: str | None = None) -> dict[str, torch.Tensor]:
    """Vectors of the words in ``wanted`` (and of their lower-cased forms; every word if ``wanted`` is None)."""
    path = Path(path)
    if not path.exists():
        raise DataMissingError(f"GloVe file missing: {path}")
    keys = None if wanted is None else set(wanted) | {w.lower() for w in wanted}
    vectors: dict[str, torch.Tensor] = {}
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
            if word in vectors:
                continue
            try:
                vectors[word] = torch.tensor([float(x) for x in parts[1:]], dtype=torch.float32)
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: not a number in the vector of {word!r}") from None
    return vectors


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


def glove_file(cfg: dict, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """The GloVe file an embeddings config names: ``cfg["path"]`` when set, else ``cfg["url"]`` downloaded into
    ``cache_dir`` (see configs/embeddings/*.yaml)."""
    if cfg.get("path"):
        path = Path(cfg["path"]).expanduser()
        if not path.exists():
            raise DataMissingError(
                f"GloVe file missing: {path} (embeddings.path). Download it from {cfg.get('url')} or point "
                f"embeddings.path at a GloVe text file (.txt, .txt.gz or .zip)."
            )
        return path
    url = cfg["url"]
    dest = Path(cache_dir) / url.rsplit("/", 1)[-1]
    return fetch(url, dest, sha256=cfg.get("sha256"), mirrors=cfg.get("mirror") or (), progress=progress,
                 hint="or set embeddings.path=FILE (a GloVe .txt/.txt.gz/.zip you have), or embeddings.mirror=URL")
