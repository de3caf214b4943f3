"""Cost of one SNLI training step (forward + backward + Adam step) with each attention, as a ratio to softmax.

    python scripts/bench_train_step.py [--repeats 30] [--steps 10] [--device cpu] [--out results/bench/train_step.json]

The model is the SNLI model of the paper (tasks/snli/model.py: GRU 100, 300-d fixed embeddings, batch 25) on
synthetic batches with SNLI-like lengths (premise 6-30 tokens, hypothesis 3-15). All four models start from the same
weights and see the same batches. Timings are interleaved (round r times every attention once, in a rotating order)
so that the load of a shared machine affects them alike; the reported number is the median over rounds of the
mean step time within a round. Target (issue 3): fusedmax and oscarmax steps at most 1.2x the softmax step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import attention
from tasks.runtime import set_threads
from tasks.snli.model import ConditionalAttentionNLI

PARAMS = {"softmax": {}, "sparsemax": {}, "fusedmax": {"lam": 0.1}, "oscarmax": {"lam": 0.01}}


def batches(n, batch_size, vocab, generator):
    out = []
    for _ in range(n):
        lp = torch.randint(6, 31, (batch_size,), generator=generator)
        lh = torch.randint(3, 16, (batch_size,), generator=generator)
        p = torch.randint(4, vocab, (batch_size, int(lp.max())), generator=generator)
        h = torch.randint(4, vocab, (batch_size, int(lh.max())), generator=generator)
        p[torch.arange(p.shape[1])[None] >= lp[:, None]] = 0
        h[torch.arange(h.shape[1])[None] >= lh[:, None]] = 0
        out.append((p, lp, h, lh, torch.randint(0, 3, (batch_size,), generator=generator)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30, help="rounds (the median is over rounds)")
    ap.add_argument("--steps", type=int, default=10, help="training steps per attention per round")
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch and numba (0: leave as is)")
    ap.add_argument("--out", default="results/bench/train_step.json")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    vocab = 2000
    embedding = torch.randn(vocab, args.dim, generator=gen) * 0.3
    data = [tuple(t.to(device) for t in b) for b in batches(args.steps, args.batch_size, vocab, gen)]

    models, optimizers = {}, {}
    torch.manual_seed(0)
    base = ConditionalAttentionNLI(embedding, attention.build("softmax"), hidden=args.hidden).state_dict()
    for name, params in PARAMS.items():
        m = ConditionalAttentionNLI(embedding, attention.build(name, **params), hidden=args.hidden).to(device)
        m.load_state_dict(base)
        models[name] = m
        optimizers[name] = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-4,
                                            weight_decay=1e-4)

    def run(name):
        m, opt = models[name], optimizers[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for p, lp, h, lh, y in data:
            loss = torch.nn.functional.cross_entropy(m(p, lp, h, lh), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / len(data)

    names = list(PARAMS)
    for name in names:  # warm-up: JIT compilation, allocator
        run(name)
        run(name)
    times = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(run(name))
    median = {n: statistics.median(t) for n, t in times.items()}
    ratio = {n: median[n] / median["softmax"] for n in names}
    print(f"training step (forward+backward+Adam), batch {args.batch_size}, GRU {args.hidden}, dim {args.dim}, "
          f"{device}, {args.repeats} rounds x {args.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"{'attention':<10} {'median ms':>10} {'ratio':>7}")
    for n in names:
        print(f"{n:<10} {1000 * median[n]:>10.2f} {ratio[n]:>6.2f}x")
    ok = all(ratio[n] <= 1.2 for n in ("fusedmax", "oscarmax"))
    print(f"target fusedmax/oscarmax <= 1.2x softmax: {'met' if ok else 'NOT met'}")
    result = {"device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda"
              else platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "batch_size": args.batch_size, "hidden": args.hidden,
              "dim": args.dim, "repeats": args.repeats, "steps": args.steps, "median_step_s": median,
              "ratio_to_softmax": ratio, "target_met": ok, "all_rounds_s": times}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
