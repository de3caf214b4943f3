"""The translation and summarization tasks for the harness (``tasks.task.Task``).

    python -m tasks.train task=multi30k attention=fusedmax experiment=multi30k_cpu task.data.root=DIR

``Seq2SeqTask`` does everything; ``Multi30kTask``, ``IWSLTTask`` and ``GigawordTask`` fix the corpus and its metric.

- training: teacher forcing, summed token NLL normalised per sentence (OpenNMT-py's default ``-normalization sents``)
  or per token;
- ``evaluate("valid")``: perplexity (teacher forcing), and, with ``eval.valid_decode: greedy`` (or ``beam``), BLEU /
  ROUGE of the decoded output; attention statistics (support, groups) of the attention rows;
- ``evaluate("test")``: beam search (``decode.beam``, 5 by default), detokenized sacreBLEU (signature kept in the
  metrics) and tokenized BLEU, or ROUGE-1/2/L F1 (Gigaword) / 75-byte recall (DUC-2004);
- ``on_test_end``: the test hypotheses (``test_hypotheses.txt``) and, for the first ``save_attention`` sentences,
  source tokens, output tokens, reference and the attention matrix (target × source) in ``attention_test.pt``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from attention import groups_kind
from attention.defaults import GAMMA  # the one default γ
from tasks.config import config_defaults
from tasks.mapping import build_attention
from tasks.runtime import set_threads
from tasks.stats import AttentionStats, zero_gradient_rows
from tasks.vocab import Vocab

from . import data as D
from . import metrics as M
from .model import Seq2Seq, nll_loss
from .search import beam_search, greedy_search, replace_unk
from .transformer import HeadStats, TransformerSeq2Seq


def _plain(obj):
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


class _Cfg(dict):
    """A dict with attribute access (what data.py reads: cfg.root, cfg.get(...))."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


# defaults for a task made without Hydra, owned by configs/task/multi30k.yaml (OpenNMT-py 0.x's defaults, each
# with its flag); iwslt.yaml and gigaword.yaml state their own. The model's, per kind of model, by
# configs/task/model/<kind>.yaml (the RNN's file has no `kind`: it is the default)
_REFERENCE = "task/multi30k.yaml"
MODEL_DEFAULTS = config_defaults("task/model/rnn.yaml")
MODEL_KINDS = {"rnn": MODEL_DEFAULTS, "transformer": config_defaults("task/model/transformer.yaml")}
DECODE_DEFAULTS = config_defaults(_REFERENCE, "task", "decode")
EVAL_DEFAULTS = config_defaults(_REFERENCE, "task", "eval")
VOCAB_DEFAULTS = config_defaults(_REFERENCE, "task", "vocab")
TRAIN_DEFAULTS = config_defaults(_REFERENCE, "task", "train")


class Seq2SeqTask:
    corpus = ""
    kind = "translation"  # or "summarization"
    default_metric = "bleu"

    def __init__(self, name: str, data: dict, attention, model: dict | None = None, vocab: dict | None = None,
                 train: dict | None = None, decode: dict | None = None, eval: dict | None = None,
                 metric: str | None = None, duc: dict | None = None, test_set: str | None = None,
                 extra_test_sets: list | tuple | None = None, seed: int = 1,
                 data_dir: str = "data", corpus: str | None = None, kind: str | None = None,
                 threads: int | None = None, **unused):
        if unused:
            raise TypeError(f"{type(self).__name__}: unknown task options {sorted(unused)}")
        self.name = name
        self.corpus = corpus or self.corpus
        self.kind = kind or self.kind
        self.metric = metric or self.default_metric
        self.attention_cfg = _plain(attention)
        self.attention_name = ((self.attention_cfg or {}).get("name", "softmax")
                               if isinstance(self.attention_cfg, dict) else getattr(attention, "name", "softmax"))
        self.data_cfg = _Cfg(_plain(data) or {})
        self.data_cfg.setdefault("cache", str(Path(data_dir) / self.corpus))
        model = _plain(model) or {}
        kind = model.get("kind", "rnn")
        if kind not in MODEL_KINDS:
            raise ValueError(f"task.model.kind={kind!r}: use one of {', '.join(MODEL_KINDS)} (task/model=transformer)")
        self.model_cfg = {**MODEL_KINDS[kind], **model}
        self.vocab_cfg = {**VOCAB_DEFAULTS, **(_plain(vocab) or {})}
        self.train_cfg = {**TRAIN_DEFAULTS, **(_plain(train) or {})}
        self.decode_cfg = {**DECODE_DEFAULTS, **(_plain(decode) or {})}
        self.eval_cfg = {**EVAL_DEFAULTS, **(_plain(eval) or {})}
        self.duc_cfg = _Cfg(_plain(duc) or {})
        self.test_set = test_set or self.corpus
        self.extra_test_names = list(extra_test_sets or ())
        self.seed = seed
        self.threads = threads  # torch.set_num_threads: 1 is much faster than 2 on a shared 2-core machine
        self.device = torch.device("cpu")
        self.last_outputs: dict[str, list] = {}
        self.extra_test_sets: list[str] = []

    # ------------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        if self.threads:
            set_threads(int(self.threads))
        self.splits = D.load_splits(self.corpus, self.data_cfg)
        self.extra_test_sets = []
        if self.test_set == "duc2004":
            self.splits["test"] = D.load_duc2004(self.duc_cfg)
        elif self.kind == "summarization" and self.duc_cfg.get("root"):
            # DUC-2004 evaluated by the same model as the Gigaword test set (Rush et al.'s protocol): no retraining
            try:
                self.splits["duc2004"] = D.load_duc2004(self.duc_cfg)
                self.extra_test_sets.append("duc2004")
            except D.DataMissingError as error:
                if not self.duc_cfg.get("optional"):
                    raise
                print(f"[{self.name}] DUC-2004 not evaluated (task.duc.optional): {str(error).splitlines()[0]}")
        for name in self.extra_test_names:
            # more test sets scored by the same model at the end (e.g. Multi30k's WMT17 sets): metrics.test.<name>
            known = D.EXTRA_TEST_SETS.get(self.corpus, ())
            if name not in known:
                raise ValueError(f"task.extra_test_sets: {self.corpus} has no test set {name!r}"
                                 + (f" (it has {', '.join(known)})" if known else " (it has none besides `test`)"))
            if self.corpus == "multi30k" and name == D.MULTI30K_SPLITS["test"]:
                raise ValueError(f"task.extra_test_sets: {name!r} is the `test` split itself; list only the others")
            self.splits[name] = D.load_split(self.corpus, self.data_cfg, name)
            self.extra_test_sets.append(name)
        for split, parallel in self.splits.items():
            if len(parallel) == 0:
                where = ", ".join(parallel.files) or parallel.name
                raise D.EmptyDataError(f"{self.name}: the {split} split is empty ({where})")
        train = self.splits["train"]
        self.check_length_filter(train)
        v = self.vocab_cfg
        self.src_vocab = Vocab.build(train.src, min_freq=v["min_freq"], max_size=v["src_size"])
        self.tgt_vocab = Vocab.build(train.tgt, min_freq=v["min_freq"], max_size=v["tgt_size"])
        self.encoded = {k: D.encode_pairs(p, self.src_vocab, self.tgt_vocab) for k, p in self.splits.items()}
        sizes = ", ".join(f"{k} {len(p)}" for k, p in self.splits.items())
        print(f"[{self.name}] {sizes} pairs; vocab src {len(self.src_vocab)}, tgt {len(self.tgt_vocab)}")

    def check_length_filter(self, train: "D.Parallel") -> None:
        """Training drops pairs longer than ``train.max_src_len`` / ``max_tgt_len`` (``length_batches``): refuse
        now if that leaves nothing, rather than train for 0 steps an epoch."""
        max_src, max_tgt = self.train_cfg["max_src_len"], self.train_cfg["max_tgt_len"]
        kept = sum(1 for s, t in zip(train.src, train.tgt)
                   if (max_src is None or len(s) <= max_src) and (max_tgt is None or len(t) <= max_tgt))
        if kept == 0:
            shortest = min(len(s) for s in train.src), min(len(t) for t in train.tgt)
            raise D.EmptyDataError(
                f"{self.name}: task.train.max_src_len={max_src} and max_tgt_len={max_tgt} drop every one of the "
                f"{len(train)} training pairs of {', '.join(train.files) or train.name} (shortest source "
                f"{shortest[0]} tokens, shortest target {shortest[1]}): raise the limits")

    @property
    def transformer(self) -> bool:
        return self.model_cfg.get("kind", "rnn") == "transformer"

    def build_model(self) -> torch.nn.Module:
        m = self.model_cfg
        if self.transformer:
            options = {k: v for k, v in m.items() if k != "kind"}
            return TransformerSeq2Seq(len(self.src_vocab), len(self.tgt_vocab), self.attention_cfg, kind="transformer",
                                      pad=Vocab.pad_id, bos=Vocab.bos_id, eos=Vocab.eos_id, **options)
        return Seq2Seq(len(self.src_vocab), len(self.tgt_vocab), build_attention(self.attention_cfg),
                       layers=m["layers"], rnn_size=m["rnn_size"], word_vec_size=m["word_vec_size"],
                       dropout=m["dropout"], input_feed=m["input_feed"], param_init=m["param_init"],
                       pad=Vocab.pad_id, share_embeddings=m["share_embeddings"], bidirectional=m["bidirectional"])

    # ------------------------------------------------------------------------------------------------- training
    def train_batches(self, epoch: int, generator: torch.Generator):
        t = self.train_cfg
        return D.length_batches(self.encoded["train"], t["batch_size"], generator, shuffle=True,
                                max_src_len=t["max_src_len"], max_tgt_len=t["max_tgt_len"])

    def training_loss(self, model, batch):
        log_probs, _ = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss = torch.nn.functional.nll_loss(log_probs.reshape(-1, log_probs.size(-1)), batch.tgt_out.reshape(-1),
                                            ignore_index=Vocab.pad_id, reduction="sum")
        # the token count stays a tensor, and the logged scalars too: no device-to-host sync per step (the
        # trainer reads them at logging steps)
        ntok = (batch.tgt_out != Vocab.pad_id).sum().clamp_min(1)
        per_token = loss.detach() / ntok
        norm = len(batch) if self.train_cfg["normalization"] == "sents" else ntok
        return loss / norm, {"nll_token": per_token, "ppl": per_token.clamp(max=50).exp()}

    # ------------------------------------------------------------------------------------------------- evaluation
    def _eval_batches(self, split: str, batch_size: int):
        return D.length_batches(self.encoded[split], batch_size, shuffle=False)

    def perplexity(self, model, split: str, stats: AttentionStats | None = None,
                   heads: HeadStats | None = None) -> float:
        """Teacher-forced perplexity of ``split``; the cross-attention rows go into ``stats`` and (a Transformer)
        the rows of every kind, layer and head into ``heads``."""
        total, count = 0.0, 0
        generator = torch.Generator().manual_seed(0)
        for batch in self._eval_batches(split, self.eval_cfg["batch_size"]):
            batch = batch.to(self.device)
            if heads is not None:
                model.capture()
            try:
                log_probs, attn, scores = model(batch.src, batch.src_lengths, batch.tgt_in, return_scores=True)
                src_mask = torch.arange(batch.src.size(1), device=self.device)[None] < batch.src_lengths[:, None]
                tgt_mask = batch.tgt_out != Vocab.pad_id
                if heads is not None:
                    heads.update(src_mask, tgt_mask)
            finally:
                if heads is not None:
                    model.capture(False)
            loss, ntok = nll_loss(log_probs, batch.tgt_out, pad=Vocab.pad_id)
            total, count = total + float(loss), count + ntok
            if stats is not None:
                mask = tgt_mask[:, :, None] & src_mask[:, None, :]
                if attn.dim() == 4:  # a Transformer: (B, T, layers * heads, S), each head's row a row
                    mask = mask[:, :, None, :]
                stats.update(attn, mask, scores=None if scores is None else scores / self.gamma,
                             dead=self.dead_rows(model, attn, scores, mask, generator))
        return math.exp(min(total / max(count, 1), 50.0))

    @staticmethod
    def dead_rows(model, attn, scores, mask, generator) -> torch.Tensor:
        """The attention rows that pass no gradient: measured through the RNN's normalizer, read off the weights
        of a Transformer (which keeps no scores: ``TransformerSeq2Seq.dead_rows``)."""
        if isinstance(model, TransformerSeq2Seq):
            return model.dead_rows(attn, "cross")
        return zero_gradient_rows(model.attn.normalizer, scores, mask, generator=generator)

    def decode(self, model, split: str, method: str = "beam") -> tuple[list[list[str]], list]:
        """Outputs (tokens, UNK-replaced when asked) and hypotheses (``search.Hypothesis``: attention matrix and the
        scores behind it) of every pair of ``split``, in order."""
        d = self.decode_cfg
        parallel, encoded = self.splits[split], self.encoded[split]
        max_len_b = d["max_len_b"]
        if split == "duc2004" and self.duc_cfg.get("max_len_b") is not None:
            max_len_b = self.duc_cfg["max_len_b"]
        outputs: list = [None] * len(encoded)
        hyps_out: list = [None] * len(encoded)
        for batch in D.length_batches(encoded, d["batch_size"], shuffle=False):
            batch = batch.to(self.device)
            kw = dict(bos=Vocab.bos_id, eos=Vocab.eos_id, max_len_a=d["max_len_a"], max_len_b=max_len_b,
                      max_length=d["max_length"])
            if method == "greedy":
                hyps = greedy_search(model, batch.src, batch.src_lengths, **kw)
            else:
                hyps = beam_search(model, batch.src, batch.src_lengths, beam=d["beam"],
                                   length_penalty=d["length_penalty"], **kw)
            for i, hyp in zip(batch.index, hyps):
                tokens = [self.tgt_vocab.itos[t] for t in hyp.tokens]
                if d["replace_unk"]:
                    tokens = replace_unk(tokens, parallel.src[i], hyp.attention, unk="<unk>",
                                         scores=hyp.attention_scores)
                outputs[i] = [t for t in tokens if t not in ("<pad>", "<bos>", "<eos>")]
                hyps_out[i] = hyp
        return outputs, hyps_out

    def score(self, split: str, outputs: list[list[str]], per_example: bool = False) -> dict:
        """The split's metrics; with ``per_example`` also what a paired significance test needs, per pair:
        sacreBLEU's sentence statistics (``metrics.bleu_sentence_stats``) or the ROUGE scores."""
        parallel = self.splits[split]
        if self.kind == "translation":
            lang = self.data_cfg.get("tgt_lang", "en")
            hyps = [M.detokenize(o, lang) for o in outputs]
            refs = parallel.tgt_raw if parallel.tgt_raw is not None else [M.detokenize(t, lang) for t in parallel.tgt]
            bleu, signature = M.bleu(hyps, refs)
            out = {"bleu": bleu, "tok_bleu": M.tokenized_bleu(outputs, parallel.tgt), "bleu_signature": signature,
                   "unk_rate": _unk_rate(outputs)}
            if per_example:
                out["per_example"] = {"kind": "bleu", "stats": M.bleu_sentence_stats(hyps, refs)}
            return out
        hyps = [" ".join(o) for o in outputs]
        if parallel.refs is not None:  # DUC-2004: 75-byte recall over 4 references
            per = M.rouge_recall_75b_per_doc(hyps, [[" ".join(r) for r in refs] for refs in parallel.refs])
        else:
            per = M.rouge_f1_per_pair(hyps, [" ".join(t) for t in parallel.tgt])
        out = {k: sum(v) / max(len(v), 1) for k, v in per.items()}
        out["unk_rate"] = _unk_rate(outputs)
        if per_example:
            out["per_example"] = {"kind": "mean", **{k: [round(x, 6) for x in v] for k, v in per.items()}}
        return out

    @property
    def gamma(self) -> float:
        spec = self.attention_cfg if isinstance(self.attention_cfg, dict) else {}
        return float(spec.get("gamma", GAMMA))

    def evaluate(self, model, split: str) -> dict:
        """Perplexity (teacher forcing) and, when decoding, BLEU / ROUGE; attention statistics (tasks/stats.py:
        support, spread, groups, and the score-scale diagnostics top2_gap / gap_ge_1 / dead_rows) of the
        teacher-forced rows on valid, of the decoded rows on test. On "test", ``per_example`` statistics for paired
        significance tests, and the extra test sets (DUC-2004 when ``task.duc.root`` is set) under their name."""
        stats = AttentionStats(groups=groups_kind(self.attention_name))
        out: dict = {}
        heads = HeadStats(model) if isinstance(model, TransformerSeq2Seq) else None
        if self.splits[split].refs is None:  # DUC has no single-target perplexity worth reporting
            out["ppl"] = self.perplexity(model, split, stats if split == "valid" else None, heads)
            out["neg_ppl"] = -out["ppl"]
            if heads is not None:
                out["heads"] = heads.compute()
        if isinstance(model, TransformerSeq2Seq):
            out["learned"] = model.learned_values()
        method = self.eval_cfg["valid_decode"] if split == "valid" else self.eval_cfg["test_decode"]
        if method and method != "none":
            start = time.perf_counter()
            outputs, hyps = self.decode(model, split, method)
            # what decoding costs, per sentence (the report's cost table compares mappings by it)
            out["decode_seconds"], out["decode_sentences"] = time.perf_counter() - start, len(outputs)
            out.update(self.score(split, outputs, per_example=split != "valid"))
            if split != "valid" or not stats.rows:
                stats.reset()
                generator = torch.Generator().manual_seed(0)
                for h in hyps:
                    if h.attention.numel():
                        scores = None if h.attention_scores is None else h.attention_scores / self.gamma
                        dead = self.dead_rows(model, h.attention, h.attention_scores, None, generator)
                        stats.update(h.attention, scores=scores, dead=dead)
            self.last_outputs[split] = [outputs, hyps]
            out["decode"] = method
        out.update(stats.compute())
        if "bleu_signature" in out:
            print(f"[{self.name}] {split} BLEU {out['bleu']:.2f} (tokenized {out['tok_bleu']:.2f}) "
                  f"sacrebleu {out['bleu_signature']}")
        if split == "test":
            for extra in self.extra_test_sets:
                out[extra] = self.evaluate(model, extra)
        return out

    def on_test_end(self, model, run_dir) -> None:
        if "test" not in self.last_outputs:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for extra in self.extra_test_sets:
            if extra in self.last_outputs:
                (run_dir / f"{extra}_hypotheses.txt").write_text(
                    "".join(" ".join(o) + "\n" for o in self.last_outputs[extra][0]), encoding="utf-8")
        outputs, hyps = self.last_outputs["test"]
        parallel = self.splits["test"]
        (run_dir / "test_hypotheses.txt").write_text("".join(" ".join(o) + "\n" for o in outputs), encoding="utf-8")
        n = min(int(self.eval_cfg["save_attention"]), len(outputs))
        items = [{"src": parallel.src[i], "hyp": outputs[i], "ref": parallel.tgt[i],
                  "attention": hyps[i].attention.float().clone(),
                  "scores": None if hyps[i].attention_scores is None else hyps[i].attention_scores.float().clone()}
                 for i in range(n)]
        torch.save({"task": self.name, "attention": self.attention_cfg, "items": items}, run_dir / "attention_test.pt")
        print(f"[{self.name}] test outputs: {run_dir / 'test_hypotheses.txt'}, attention of {n} sentences: "
              f"{run_dir / 'attention_test.pt'}")


def _unk_rate(outputs: list[list[str]]) -> float:
    """The fraction of output tokens that are ``<unk>`` (after UNK replacement, when it is on)."""
    n = sum(len(o) for o in outputs)
    return sum(t == "<unk>" for o in outputs for t in o) / max(n, 1)


class Multi30kTask(Seq2SeqTask):
    corpus = "multi30k"
    kind = "translation"
    default_metric = "bleu"


class IWSLTTask(Seq2SeqTask):
    corpus = "iwslt14"
    kind = "translation"
    default_metric = "bleu"


class GigawordTask(Seq2SeqTask):
    corpus = "gigaword"
    kind = "summarization"
    default_metric = "rougeL_f1"
