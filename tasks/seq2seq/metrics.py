"""Translation and summarization metrics.

- ``bleu``: sacrebleu's corpus BLEU on detokenized text (hypotheses detokenized with sacremoses' Moses
  detokenizer), with its signature, the number to report today.
- ``tokenized_bleu``: sacrebleu with ``tokenize='none'`` on the tokenized text, what multi-bleu.perl computed and
  what papers of 2017 (this one included) reported.
- ``rouge_f1``: ROUGE-1/2/L F1 with Google's rouge-score (Porter stemming, as ROUGE-1.5.5 ``-m``): Gigaword.
- ``rouge_recall_75b``: ROUGE-1/2/L recall with each hypothesis cut to its first 75 bytes (ROUGE-1.5.5 ``-b 75``)
  and averaged over the references of each document: DUC-2004.
"""

from __future__ import annotations

from functools import lru_cache

import sacrebleu
from rouge_score import rouge_scorer
from sacremoses import MosesDetokenizer


@lru_cache(maxsize=8)
def _detokenizer(lang: str) -> MosesDetokenizer:
    return MosesDetokenizer(lang=lang)


def detokenize(tokens: list[str], lang: str = "en") -> str:
    """Moses detokenization (also un-escapes &apos; &amp; … written by the Moses tokenizer)."""
    return _detokenizer(lang).detokenize(list(tokens))


def bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus BLEU of detokenized strings with sacrebleu's default 13a tokenizer -> (score, signature)."""
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


def tokenized_bleu(hypotheses: list[list[str]], references: list[list[str]]) -> float:
    """BLEU on already tokenized text, no further tokenization: multi-bleu.perl's number."""
    metric = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    score = metric.corpus_score([" ".join(h) for h in hypotheses], [[" ".join(r) for r in references]])
    return float(score.score)


_ROUGE = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _scorer():
    return rouge_scorer.RougeScorer(list(_ROUGE), use_stemmer=True)


def rouge_f1(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (×100) over the pairs: the Gigaword convention (Rush et al., 2015)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"rouge_f1: {len(hypotheses)} hypotheses for {len(references)} references")
    totals = dict.fromkeys(_ROUGE, 0.0)
    for hyp, ref in zip(hypotheses, references):
        scores = _scorer().score(ref, hyp)
        for k in _ROUGE:
            totals[k] += scores[k].fmeasure
    n = max(len(hypotheses), 1)
    return {f"{k}_f1": 100.0 * v / n for k, v in totals.items()}


def truncate_bytes(text: str, limit: int = 75) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def rouge_recall_75b(hypotheses: list[str], references: list[list[str]], limit: int = 75) -> dict[str, float]:
    """Mean ROUGE-1/2/L recall (×100) with hypotheses cut to ``limit`` bytes, averaged over each document's
    references: the DUC-2004 convention (ROUGE-1.5.5 -b 75, recall)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"rouge_recall_75b: {len(hypotheses)} hypotheses for {len(references)} reference sets")
    totals = dict.fromkeys(_ROUGE, 0.0)
    for hyp, refs in zip(hypotheses, references):
        hyp = truncate_bytes(hyp, limit)
        for k in _ROUGE:
            totals[k] += sum(_scorer().score(r, hyp)[k].recall for r in refs) / max(len(refs), 1)
    n = max(len(hypotheses), 1)
    return {f"{k}_recall": 100.0 * v / n for k, v in totals.items()}
