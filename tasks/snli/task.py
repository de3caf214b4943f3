"""The SNLI task for the trainer (tasks/task.py's ``Task`` protocol); configuration: configs/task/snli.yaml."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from attention import groups_kind
from attention.defaults import GAMMA  # the one default γ

from ..config import config_defaults
from ..embeddings import embedding_matrix, glove_file, read_glove
from ..mapping import build_attention
from ..runtime import move_to
from ..stats import AttentionStats, zero_gradient_rows
from ..vocab import Vocab
from . import data as snli_data
from .model import ConditionalAttentionNLI

log = logging.getLogger(__name__)


@dataclass
class Batch:
    premise: torch.Tensor         # (B, Tp) token ids, 0-padded
    premise_len: torch.Tensor     # (B,)
    hypothesis: torch.Tensor      # (B, Th)
    hypothesis_len: torch.Tensor  # (B,)
    label: torch.Tensor           # (B,)
    index: torch.Tensor           # (B,) positions in the split


# defaults for a task made without Hydra, owned by configs/task/snli.yaml
_DEFAULTS = config_defaults("task/snli.yaml", "task")


class SNLITask:
    name = "snli"
    metric = "accuracy"

    def __init__(self, attention: dict, name: str = "snli", seed: int = 1, data_dir: str = "data",
                 data: dict | None = None, embeddings: dict | None = None, model: dict | None = None,
                 vocab: dict | None = None, batch_size: int = _DEFAULTS["batch_size"],
                 eval_batch_size: int = _DEFAULTS["eval_batch_size"],
                 attention_examples: int = _DEFAULTS["attention_examples"], progress: bool = True):
        self.attention_cfg = dict(attention)
        self.seed, self.data_dir = seed, Path(data_dir)
        self.data_cfg = dict(data or {})
        self.embeddings_cfg = dict(embeddings) if embeddings else None
        self.model_cfg = {**_DEFAULTS["model"], **(model or {})}
        self.vocab_cfg = {**_DEFAULTS["vocab"], **(vocab or {})}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.attention_examples = attention_examples
        self.progress = progress
        self.device = torch.device("cpu")

    # -- data ----------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.splits = snli_data.load(self.data_cfg, self.data_dir, progress=self.progress)
        train = self.splits["train"]
        train_sentences = [s for ex in train for s in (ex.premise, ex.hypothesis)]
        vectors, dim = {}, int(self.model_cfg["embedding_dim"])
        if self.embeddings_cfg:
            path = glove_file(self.embeddings_cfg, self.data_dir / "glove", progress=self.progress)
            wanted = {t for exs in self.splits.values() for ex in exs for t in (*ex.premise, *ex.hypothesis)}
            dim = int(self.embeddings_cfg["dim"])
            vectors = read_glove(path, wanted, dim=dim, member=self.embeddings_cfg.get("member"))
        extra = []
        if self.vocab_cfg["extend_with_pretrained"] and vectors:
            # words of the other splits that have a (fixed) pre-trained vector: no label information is used
            extra = sorted({t for split, exs in self.splits.items() if split != "train" for ex in exs
                            for t in (*ex.premise, *ex.hypothesis) if t in vectors or t.lower() in vectors})
        self.vocab = Vocab.build(train_sentences, min_freq=self.vocab_cfg["min_freq"],
                                 max_size=self.vocab_cfg["max_size"], extra=extra)
        oov = (self.embeddings_cfg or {}).get("oov", "normal")
        oov_std = (self.embeddings_cfg or {}).get("oov_std", 0.1)
        self.embedding, info = embedding_matrix(self.vocab, vectors, dim, oov=oov, oov_std=oov_std, seed=0)
        self.freeze = bool((self.embeddings_cfg or {}).get("freeze", True)) and bool(vectors)
        self.encoded = {split: self._encode(exs) for split, exs in self.splits.items()}
        sizes = ", ".join(f"{s} {len(e)}" for s, e in self.splits.items())
        log.info(f"{sizes} pairs; vocab {len(self.vocab)}; pre-trained vectors for {info['found']} "
              f"({info['coverage']:.1%}); embeddings {'fixed' if self.freeze else 'trained'}")

    def _encode(self, examples):
        enc = lambda toks: self.vocab.encode(toks) or [self.vocab.unk_id]  # noqa: E731 (empty sentence: <unk>)
        return [(enc(ex.premise), enc(ex.hypothesis), ex.label) for ex in examples]

    def collate(self, split: str, indices) -> Batch:
        rows = [self.encoded[split][i] for i in indices]
        def pad(seqs):
            lengths = torch.tensor([len(s) for s in seqs])
            out = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
            for j, s in enumerate(seqs):
                out[j, : len(s)] = torch.tensor(s)
            return out, lengths
        premise, premise_len = pad([r[0] for r in rows])
        hypothesis, hypothesis_len = pad([r[1] for r in rows])
        return Batch(premise, premise_len, hypothesis, hypothesis_len, torch.tensor([r[2] for r in rows]),
                     torch.as_tensor(list(indices)))

    # -- the protocol --------------------------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        return ConditionalAttentionNLI(self.embedding, build_attention(self.attention_cfg),
                                       hidden=int(self.model_cfg["hidden"]), dropout=float(self.model_cfg["dropout"]),
                                       freeze=self.freeze)

    def train_batches(self, epoch: int, generator: torch.Generator) -> list[Batch]:
        order = torch.randperm(len(self.encoded["train"]), generator=generator).tolist()
        return [self.collate("train", order[i: i + self.batch_size]) for i in range(0, len(order), self.batch_size)]

    def forward(self, model, batch: Batch, return_attention: bool = False):
        return model(batch.premise, batch.premise_len, batch.hypothesis, batch.hypothesis_len,
                     return_attention=return_attention)

    def training_loss(self, model, batch: Batch):
        logits = self.forward(model, batch)
        loss = F.cross_entropy(logits, batch.label)
        # a tensor: the trainer reads it only at logging steps (no device-to-host sync every step)
        return loss, {"accuracy": (logits.argmax(-1) == batch.label).float().mean().detach()}

    def eval_batches(self, split: str):
        n = len(self.encoded[split])
        for i in range(0, n, self.eval_batch_size):
            yield self.collate(split, range(i, min(i + self.eval_batch_size, n)))

    def evaluate(self, model, split: str) -> dict:
        """Accuracy, loss and attention statistics (tasks/stats.py, with the score diagnostics); on "test" also
        ``per_example`` (which pairs were classified correctly, in order), for paired significance tests."""
        stats = AttentionStats(groups=groups_kind(self.attention_cfg["name"]))
        gamma = float(self.attention_cfg.get("gamma", GAMMA))
        generator = torch.Generator().manual_seed(0)
        correct, loss_sum, n, hits = 0, 0.0, 0, []
        for batch in self.eval_batches(split):
            batch = _to(batch, self.device)
            logits, alpha, mask, scores = self.forward(model, batch, return_attention=True)
            loss_sum += float(F.cross_entropy(logits, batch.label, reduction="sum"))
            hit = logits.argmax(-1) == batch.label
            correct += int(hit.sum())
            hits += hit.int().tolist()
            n += len(batch.label)
            dead = zero_gradient_rows(model.attention, scores, mask, generator=generator)
            stats.update(alpha, mask, scores=scores / gamma, dead=dead)
        out = {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1), "examples": n, **stats.compute()}
        if split == "test":
            out["per_example"] = {"kind": "accuracy", "correct": "".join(map(str, hits))}
        return out

    def on_test_end(self, model, run_dir) -> None:
        """Attention maps of the first test pairs: <run_dir>/attention_test.json (+ attention_test.png)."""
        k = min(self.attention_examples, len(self.encoded["test"]))
        if k == 0:
            return
        batch = _to(self.collate("test", range(k)), self.device)
        logits, alpha, _, _ = self.forward(model, batch, return_attention=True)
        items = []
        for j in range(k):
            ex = self.splits["test"][j]
            items.append({"premise": ex.premise, "hypothesis": ex.hypothesis,
                          "label": snli_data.LABELS[ex.label],
                          "prediction": snli_data.LABELS[int(logits[j].argmax())],
                          "attention": [round(float(a), 6) for a in alpha[j, : len(ex.premise)]]})
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "attention_test.json").write_text(json.dumps(
            {"attention": self.attention_cfg, "examples": items}, indent=1))
        try:
            _plot(items[:6], run_dir / "attention_test.png", self.attention_cfg["name"])
        except Exception as error:  # a figure is a nicety; never fail a finished run on it
            log.info(f"attention figure not written: {error}")


def _to(batch: Batch, device) -> Batch:
    return move_to(batch, device)


def _plot(items, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 1, figsize=(8, 1.1 * len(items) + 0.5), squeeze=False)
    for ax, item in zip(axes[:, 0], items):
        ax.imshow([item["attention"]], cmap="Greys", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(item["premise"])), item["premise"], rotation=60, fontsize=7)
        ax.set_yticks([])
        ax.set_title(f"{' '.join(item['hypothesis'])}  [{item['label']} / pred {item['prediction']}]", fontsize=7)
    fig.suptitle(f"SNLI test attention: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
