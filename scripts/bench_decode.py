"""Decoding speed of the seq2seq model with each attention mapping, as a ratio to softmax, measured in one run.

    python scripts/bench_decode.py [--batch 50] [--beam 5] [--steps 30] [--reps 5] [--threads 1] [--json out.json]
    make bench-decode ARGS="--reps 7"          (writes results/bench/decode.json)

The model is the CPU preset's (1 layer, 128 units, 10k/10k vocabularies, like configs/experiment/*_cpu.yaml) with
random weights and <eos> disabled, so every mapping decodes exactly ``--steps`` target steps on the same source batch:
the ratio is the per-step cost of the mapping inside greedy / beam search. Repetitions are interleaved across
mappings and the median is kept. Target: fusedmax and oscarmax at most 1.3x softmax.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import attention
from tasks.runtime import set_threads
from tasks.seq2seq.model import Seq2Seq
from tasks.seq2seq.search import beam_search, greedy_search

PARAMS = {"softmax": {}, "sparsemax": {}, "fusedmax": {"lam": 0.1}, "oscarmax": {"lam": 0.01}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rnn-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)  # torch and numba (the sparse mappings' CPU kernels)
    torch.manual_seed(0)
    lengths = torch.randint(8, 31, (args.batch,))
    src = torch.randint(4, args.vocab, (args.batch, int(lengths.max())))
    src[torch.arange(src.size(1))[None] >= lengths[:, None]] = 0
    models = {}
    for name in attention.NAMES:
        torch.manual_seed(1)  # same weights for every mapping
        m = Seq2Seq(args.vocab, args.vocab, attention.build(name, **PARAMS[name]), layers=args.layers,
                    rnn_size=args.rnn_size, word_vec_size=args.rnn_size).eval()
        with torch.no_grad():
            m.generator.bias[3] = -1e9  # no <eos>: exactly `steps` steps for everyone
        models[name] = m
    kw = dict(bos=2, eos=3, max_len_a=0.0, max_len_b=args.steps, max_length=args.steps)
    runs = {"greedy": lambda m: greedy_search(m, src, lengths, **kw),
            "beam": lambda m: beam_search(m, src, lengths, beam=args.beam, **kw)}
    times = {(how, name): [] for how in runs for name in models}
    for how, fn in runs.items():
        for m in models.values():  # warm-up (numba compilation, allocator)
            fn(m)
        for _ in range(args.reps):
            for name, m in models.items():
                t = time.perf_counter()
                fn(m)
                times[(how, name)].append(time.perf_counter() - t)
    result = {"config": vars(args), "seconds": {}, "ratio_to_softmax": {}}
    print(f"decoding {args.batch} sentences x {args.steps} steps (beam {args.beam}), {args.threads} thread(s), "
          f"median of {args.reps}")
    print(f"{'':10s}" + "".join(f"{n:>22s}" for n in models))
    for how in runs:
        base = statistics.median(times[(how, "softmax")])
        cells = []
        for name in models:
            med = statistics.median(times[(how, name)])
            result["seconds"][f"{how}/{name}"] = med
            result["ratio_to_softmax"][f"{how}/{name}"] = med / base
            cells.append(f"{med:8.3f}s ({med / base:4.2f}x)")
        print(f"{how:10s}" + "".join(f"{c:>22s}" for c in cells))
    worst = max(v for k, v in result["ratio_to_softmax"].items() if k.split("/")[1] in ("fusedmax", "oscarmax"))
    print(f"worst fusedmax/oscarmax ratio: {worst:.2f}x (target <= 1.3x)")
    result["worst_structured_ratio"] = worst
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
