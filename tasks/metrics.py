"""Metrics that a task computes and the report computes again from the run records: below both, so that the report
(tasks/report/) needs no task code.

- ``bleu_from_stats``: corpus BLEU from summed sacreBLEU sentence statistics. The seq2seq tasks record each test
  sentence's statistics (``tasks.seq2seq.metrics.bleu_sentence_stats``); the paired bootstrap
  (``tasks.report.significance``) sums them over each resampled test set.
"""

from __future__ import annotations

import sacrebleu


def bleu_from_stats(summed: list[int] | tuple[int, ...]) -> float:
    """Corpus BLEU from summed sentence statistics ``[hyp_len, ref_len, m1..m4, t1..t4]`` (sacreBLEU's own formula
    and default smoothing)."""
    return float(sacrebleu.metrics.BLEU()._compute_score_from_stats([int(x) for x in summed]).score)
