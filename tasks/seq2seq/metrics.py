"""Translation and summarization metrics.

- ``bleu``: sacrebleu's corpus BLEU on detokenized text (hypotheses detokenized with sacremoses' Moses
  detokenizer), with its signature, the number to report today.

An ``<unk>`` that the model emits (and UNK replacement did not replace) is scored as ONE token that matches
nothing: it is written as ``UNK_MARK`` (U+2047 "⁇", SentencePiece's sign for an unknown piece), which no reference
contains and which sacreBLEU's 13a tokenizer keeps whole. Left as ``<unk>``, 13a would split it into ``< unk >``,
three tokens, penalising one unknown word three times and lengthening the output (which also moves the brevity
penalty).
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

from tasks.metrics import bleu_from_stats  # noqa: F401 - below the report and the tasks; the pair of bleu_sentence_stats


@lru_cache(maxsize=8)
def _detokenizer(lang: str) -> MosesDetokenizer:
    return MosesDetokenizer(lang=lang)


UNK = "<unk>"
UNK_MARK = "\u2047"


def mark_unk(tokens: list[str], unk: str = UNK) -> list[str]:
    """``tokens`` with every ``unk`` replaced by ``UNK_MARK``: one token that no reference matches."""
    return [UNK_MARK if t == unk else t for t in tokens]


def detokenize(tokens: list[str], lang: str = "en") -> str:
    """Moses detokenization (also un-escapes &apos; &amp; … written by the Moses tokenizer); ``<unk>`` becomes
    ``UNK_MARK`` first (see the module docstring)."""
    return _detokenizer(lang).detokenize(mark_unk(list(tokens)))


def bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus BLEU of detokenized strings with sacrebleu's default 13a tokenizer -> (score, signature)."""
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score([h.replace(UNK, UNK_MARK) for h in hypotheses], [list(references)])
    return float(score.score), str(metric.get_signature())


def tokenized_bleu(hypotheses: list[list[str]], references: list[list[str]]) -> float:
    """BLEU on already tokenized text, no further tokenization: multi-bleu.perl's number."""
    metric = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    score = metric.corpus_score([" ".join(mark_unk(h)) for h in hypotheses], [[" ".join(r) for r in references]])
    return float(score.score)


def bleu_sentence_stats(hypotheses: list[str], references: list[str]) -> list[list[int]]:
    """sacreBLEU's sufficient statistics of each sentence (hypothesis length, reference length, matching n-grams
    for n = 1..4, hypothesis n-grams for n = 1..4), for the detokenized BLEU of ``bleu``: summed over any subset of
    sentences they give that subset's corpus BLEU (``tasks.metrics.bleu_from_stats``), which is what a paired
    bootstrap needs."""
    metric = sacrebleu.metrics.BLEU()
    stats = metric._extract_corpus_statistics([h.replace(UNK, UNK_MARK) for h in hypotheses], [list(references)])
    return [[int(x) for x in row] for row in stats]


_ROUGE = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _scorer():
    return rouge_scorer.RougeScorer(list(_ROUGE), use_stemmer=True)


def rouge_f1_per_pair(hypotheses: list[str], references: list[str]) -> dict[str, list[float]]:
    """ROUGE-1/2/L F1 (×100) of each pair (their means are ``rouge_f1``)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"rouge_f1: {len(hypotheses)} hypotheses for {len(references)} references")
    per = {f"{k}_f1": [] for k in _ROUGE}
    for hyp, ref in zip(hypotheses, references):
        scores = _scorer().score(ref, hyp)
        for k in _ROUGE:
            per[f"{k}_f1"].append(100.0 * scores[k].fmeasure)
    return per


def rouge_f1(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (×100) over the pairs: the Gigaword convention (Rush et al., 2015)."""
    per = rouge_f1_per_pair(hypotheses, references)
    return {k: sum(v) / max(len(v), 1) for k, v in per.items()}


def truncate_bytes(text: str, limit: int = 75) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def rouge_recall_75b_per_doc(hypotheses: list[str], references: list[list[str]], limit: int = 75
                             ) -> dict[str, list[float]]:
    """ROUGE-1/2/L recall (×100) of each document (their means are ``rouge_recall_75b``)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"rouge_recall_75b: {len(hypotheses)} hypotheses for {len(references)} reference sets")
    per = {f"{k}_recall": [] for k in _ROUGE}
    for hyp, refs in zip(hypotheses, references):
        hyp = truncate_bytes(hyp, limit)
        for k in _ROUGE:
            per[f"{k}_recall"].append(100.0 * sum(_scorer().score(r, hyp)[k].recall for r in refs) / max(len(refs), 1))
    return per


def rouge_recall_75b(hypotheses: list[str], references: list[list[str]], limit: int = 75) -> dict[str, float]:
    """Mean ROUGE-1/2/L recall (×100) with hypotheses cut to ``limit`` bytes, averaged over each document's
    references: the DUC-2004 convention (ROUGE-1.5.5 -b 75, recall)."""
    per = rouge_recall_75b_per_doc(hypotheses, references, limit)
    return {k: sum(v) / max(len(v), 1) for k, v in per.items()}
