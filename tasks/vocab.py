"""A token vocabulary with the four specials <pad>=0, <unk>=1, <bos>=2, <eos>=3.

    >>> v = Vocab.build([["a", "cat"], ["a", "dog"]], min_freq=1)
    >>> v.encode(["a", "cow"], bos=True, eos=True)   # [2, 4, 1, 3]
    >>> v.decode([2, 4, 1, 3])                       # ["a", "<unk>"]  (specials dropped unless keep_specials)

Tokens are ordered by decreasing frequency, ties broken by first appearance (deterministic).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .files import atomic_write

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def __init__(self, tokens: Iterable[str] = ()):
        self.itos: list[str] = list(SPECIALS)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        for token in tokens:
            self.add(token)

    @classmethod
    def build(cls, sentences: Iterable[Iterable[str]], min_freq: int = 1, max_size: int | None = None,
              extra: Iterable[str] = ()) -> "Vocab":
        """From token sequences: tokens seen at least ``min_freq`` times, the ``max_size`` most frequent (specials
        not counted), then the tokens of ``extra`` not already in."""
        counts: Counter = Counter()
        for sentence in sentences:
            counts.update(sentence)
        ranked = [t for t, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_freq and t not in SPECIALS]
        if max_size is not None:
            ranked = ranked[:max_size]
        vocab = cls(ranked)
        for token in extra:
            vocab.add(token)
        return vocab

    def add(self, token: str) -> int:
        if token not in self.stoi:
            self.stoi[token] = len(self.itos)
            self.itos.append(token)
        return self.stoi[token]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def encode(self, tokens: Iterable[str], bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.stoi.get(t, self.unk_id) for t in tokens]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int], keep_specials: bool = False, stop_at_eos: bool = True) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if stop_at_eos and i == self.eos_id and not keep_specials:
                break
            if not keep_specials and i in (self.pad_id, self.bos_id, self.eos_id):
                continue
            out.append(self.itos[i])
        return out

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, json.dumps({"itos": self.itos}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        itos = json.loads(Path(path).read_text())["itos"]
        if tuple(itos[:4]) != SPECIALS:
            raise ValueError(f"{path}: not a Vocab file (specials {itos[:4]})")
        return cls(itos[4:])

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"
