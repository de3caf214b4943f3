"""Paired significance of a mapping against softmax: the paired bootstrap over test examples (Koehn, 2004).

Every finished run records, next to its test metrics, what a paired test needs per test example
(``metrics.test.per_example``, written by the tasks):

    {"kind": "accuracy", "correct": "0110..."}                      SNLI: 1 where the pair was classified correctly
    {"kind": "bleu", "stats": [[hyp_len, ref_len, m1..m4, t1..t4], ...]}   sacreBLEU's sentence statistics
    {"kind": "mean", "rouge1_f1": [...], "rouge2_f1": [...], ...}   a metric that is a mean over examples (ROUGE)

``paired_bootstrap(a_runs, b_runs)`` compares two mappings run with the same configuration and seeds: each
bootstrap sample draws the test examples with replacement (the same draw for every run), computes each run's
corpus metric on it (BLEU from the summed statistics, accuracy or ROUGE as a mean) and the difference of the two
mappings' means over seeds. The p-value is two-sided, from the bootstrap distribution shifted to mean zero (as
sacreBLEU's ``--paired-bs``): the probability of a difference at least as large as the observed one if the two
mappings were equally good on this test set. The interval is the 2.5-97.5 percentile of the bootstrap differences.
What it does not measure: the variance between seeds (the tables show it as ± std over seeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Examples:
    """One run's per-example statistics for one metric: ``values`` (n examples × k) and how to reduce a sum."""

    values: np.ndarray
    kind: str  # "accuracy" | "bleu" | "mean"

    def __len__(self) -> int:
        return self.values.shape[0]

    def score_sums(self, sums: np.ndarray, counts: float) -> np.ndarray:
        """The metric of each row of ``sums`` (B × k, summed statistics of ``counts`` examples)."""
        if self.kind == "bleu":
            from tasks.metrics import bleu_from_stats

            return np.array([bleu_from_stats(row) for row in np.rint(sums).astype(np.int64)])
        scale = 100.0 if self.kind == "accuracy" else 1.0
        return scale * sums[:, 0] / counts

    def score(self) -> float:
        return float(self.score_sums(self.values.sum(0, keepdims=True), len(self))[0])


def examples_of(per_example: dict | None, metric: str) -> Examples | None:
    """The ``Examples`` of ``metric`` ("accuracy", "bleu", "rouge1_f1", ...) from a record's per-example block."""
    if not isinstance(per_example, dict):
        return None
    kind = per_example.get("kind")
    if kind == "accuracy" and metric == "accuracy" and isinstance(per_example.get("correct"), str):
        return Examples(np.array([[int(c)] for c in per_example["correct"]], dtype=np.float64), "accuracy")
    if kind == "bleu" and metric == "bleu" and per_example.get("stats"):
        return Examples(np.asarray(per_example["stats"], dtype=np.float64), "bleu")
    if kind == "mean" and isinstance(per_example.get(metric), list):
        return Examples(np.asarray(per_example[metric], dtype=np.float64)[:, None], "mean")
    return None


@dataclass
class Comparison:
    delta: float  # mean over seeds of metric(a) - metric(b), on the whole test set
    low: float  # 95% bootstrap interval of the difference
    high: float
    p: float  # two-sided paired-bootstrap p-value
    pairs: int  # seeds compared
    samples: int
    seed_deltas: tuple = ()  # metric(a) - metric(b) of each seed, in seed order

    @property
    def seed_p(self) -> float | None:
        """Two-sided p-value of an exact sign-flip (permutation) test over the seeds' differences: how often a
        random sign on each seed's difference gives a mean at least as far from 0. It measures what the bootstrap
        over examples does not, the variation between seeds; with n seeds it cannot go below 2 / 2**n (0.25 for 3)."""
        return sign_flip_p(self.seed_deltas) if len(self.seed_deltas) >= 2 else None

    @property
    def p_text(self) -> str:
        """The p-value as the tables, the headline and the figures print it: ``p<0.001`` or ``p=0.123``."""
        return "p<0.001" if self.p < 0.001 else f"p={self.p:.3f}"


def sign_flip_p(deltas, exact_up_to: int = 16, samples: int = 100_000, seed: int = 12345) -> float:
    """Two-sided p-value of the paired sign-flip test of mean(deltas) = 0: every sign pattern when there are at most
    ``exact_up_to`` deltas (exact), else ``samples`` random ones."""
    d = np.asarray(deltas, dtype=np.float64)
    n = len(d)
    if n <= exact_up_to:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(samples, n))
    means = np.abs(signs @ d) / n
    return float(np.mean(means >= abs(d.mean()) - 1e-12))


def paired_bootstrap(a_runs: list[Examples], b_runs: list[Examples], samples: int = 1000, seed: int = 12345
                     ) -> Comparison:
    """Paired bootstrap of mean(metric over ``a_runs``) - mean(metric over ``b_runs``) (runs paired by seed)."""
    if not a_runs or len(a_runs) != len(b_runs):
        raise ValueError(f"paired_bootstrap needs the same number (≥ 1) of runs on each side, got "
                         f"{len(a_runs)} and {len(b_runs)}")
    n = len(a_runs[0])
    if any(len(r) != n for r in a_runs + b_runs):
        raise ValueError("paired_bootstrap: the runs were scored on test sets of different sizes "
                         f"({sorted({len(r) for r in a_runs + b_runs})})")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(np.float64)  # (B, n) draw counts

    def mean_over_runs(runs: list[Examples]) -> tuple[float, np.ndarray]:
        full = np.mean([r.score() for r in runs])
        boot = np.mean([r.score_sums(weights @ r.values, n) for r in runs], axis=0)
        return float(full), boot

    a_full, a_boot = mean_over_runs(a_runs)
    b_full, b_boot = mean_over_runs(b_runs)
    delta = a_full - b_full
    deltas = a_boot - b_boot
    p = (np.sum(np.abs(deltas - deltas.mean()) >= abs(delta)) + 1) / (samples + 1)
    low, high = np.percentile(deltas, [2.5, 97.5])
    per_seed = tuple(float(a.score() - b.score()) for a, b in zip(a_runs, b_runs))
    return Comparison(float(delta), float(low), float(high), float(p), len(a_runs), samples, per_seed)
