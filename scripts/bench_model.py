"""Hugging Face models with every mapping as their attention, against transformers' eager softmax (`make bench-model`).

    python -m scripts.bench_model            # `make bench-model`: ~10 min on one CPU thread here, mostly compiling
    python -m scripts.bench_model --quick    # tiny sizes, two rounds, nothing compiled: a smoke run (the tests)

A Llama-shaped causal LM (``LlamaForCausalLM``: RoPE, grouped-query attention, a causal mask) and a BERT-shaped
masked LM (``BertForMaskedLM``: bidirectional, no mask to apply), built from small configs (no download), with
random weights and token ids. Every mapping runs through ``attention.huggingface.register`` (the adapter's own
softmax included, the same math as transformers'); the baseline is ``attn_implementation="eager"``. Timed:

- ``train``: one training step's forward and backward of the LM loss (labels = the inputs), no optimizer step;
- ``generate`` (Llama): greedy ``generate`` of ``NEW_TOKENS`` tokens after a prompt, with the KV cache;
- ``compiled``: the training step of ``torch.compile(model)`` (inductor), at ``COMPILE_TOKENS`` tokens only:
  one compilation takes 30-50 s here, per model and mapping.

Every method has its own copy of the same weights; each is warmed up, then timed in round-robin rounds in a
rotating order (load from other processes falls on all alike); reported is the median CPU time of the main
thread (``time.thread_time``) with torch and numba on one thread, and the ratio to eager softmax from the same
rounds. Peak memory: a second process (so that timing runs with the ordinary allocator) runs one step of every
eager method after a warm-up step, with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``: every
freed tensor goes back to the system), and samples the resident set size (``/proc/self/statm``) every 0.2 ms: the
peak during the step minus the size before it, in MiB. That is approximate (a sampler can miss a peak shorter than
its period; it counts pages, not bytes) and not measured for compiled models.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench" / "model.json"

MAPPINGS = {"softmax": {}, "sparsemax": {}, "fusedmax": {"lam": 0.1}, "oscarmax": {"lam": 0.01},
            "entmax": {"alpha": 1.5}}
METHODS = ["eager", *MAPPINGS]  # "eager": transformers' own softmax attention
TOKENS = [128, 256, 512, 2048]
BATCH = {128: 4, 256: 4, 512: 2, 2048: 1}
NEW_TOKENS = 8
COMPILE_TOKENS = [256]
VOCAB = 1000
SIZES = {"hidden": 128, "intermediate": 256, "layers": 2, "heads": 4, "kv_heads": 2}
QUICK = {"tokens": [16, 32], "batch": 2, "new_tokens": 2, "rounds": 2,
         "sizes": {"hidden": 32, "intermediate": 64, "layers": 1, "heads": 4, "kv_heads": 2}}
TARGETS = {"softmax": 1.05, "other": 1.3, "compiled_over_eager": 1.0}  # at 256 tokens, the Llama training step


def implementation(method: str) -> str:
    return "eager" if method == "eager" else f"bench-{method}"


def build(kind: str, sizes: dict, max_tokens: int):
    """A model of ``kind`` ("llama", "bert") with random weights, in training mode."""
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=sizes["hidden"], intermediate_size=sizes["intermediate"],
                             num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                             num_key_value_heads=sizes["kv_heads"], max_position_embeddings=max_tokens + 64,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0)
        return LlamaForCausalLM(config).train()
    config = BertConfig(vocab_size=VOCAB, hidden_size=sizes["hidden"], intermediate_size=sizes["intermediate"],
                        num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                        max_position_embeddings=max_tokens + 64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(config).train()


def copies(base, compiled: bool) -> dict:
    """One copy of ``base`` per method (the same weights), running that method's attention."""
    import torch

    models = {}
    for method in METHODS:
        model = copy.deepcopy(base)
        model.set_attn_implementation(implementation(method))
        models[method] = torch.compile(model) if compiled else model
    return models


def train_step(model, ids):
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()


def generate(model, ids, new_tokens):
    import torch

    with torch.no_grad():
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                       pad_token_id=0)


def _call(mode, model, ids, new_tokens):
    return train_step(model, ids) if mode != "generate" else generate(model, ids, new_tokens)


def cells(kinds, tokens, batch, compile_tokens):
    """(model, mode, tokens, batch, compiled) for every measurement, in the order they run."""
    for kind in kinds:
        for t in tokens:
            yield kind, "train", t, batch(t), False
        if kind == "llama":
            for t in tokens:
                yield kind, "generate", t, batch(t), False
        for t in compile_tokens:
            yield kind, "train", t, batch(t), True


def time_cell(models, mode, ids, new_tokens, rounds, log):
    """Median thread time (ms) of every method over round-robin rounds, after a warm-up."""
    for method, model in models.items():
        for _ in range(2):
            _call(mode, model, ids, new_tokens)
    times = {method: [] for method in models}
    names = list(models)
    for r in range(rounds):
        for method in names[r % len(names):] + names[:r % len(names)]:
            start = time.thread_time()
            _call(mode, models[method], ids, new_tokens)
            times[method].append(time.thread_time() - start)
    return {method: statistics.median(ts) * 1e3 for method, ts in times.items()}


class RssSampler:
    """The peak resident set size (bytes) while the context runs, sampled from /proc/self/statm by a thread."""

    PERIOD = 2e-4

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def __enter__(self):
        self.before = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.PERIOD)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.before) / 2 ** 20


def setup(threads: int = 1):
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    import torch

    import attention.huggingface

    torch.set_num_threads(threads)
    for method, params in MAPPINGS.items():
        attention.huggingface.register(implementation(method), mapping=method, **params)
    return torch


def plan(args):
    sizes = QUICK["sizes"] if args.quick else SIZES
    tokens = args.tokens or (QUICK["tokens"] if args.quick else TOKENS)
    compile_tokens = args.compile_tokens if args.compile_tokens is not None else ([] if args.quick else
                                                                                  COMPILE_TOKENS)
    new_tokens = QUICK["new_tokens"] if args.quick else NEW_TOKENS
    rounds = args.rounds or (QUICK["rounds"] if args.quick else 5)

    def batch(t):
        return QUICK["batch"] if args.quick else BATCH.get(t, max(1, 1024 // t))

    return sizes, tokens, compile_tokens, new_tokens, rounds, batch


def measure_memory(args) -> list:
    """The child process: one step of every eager method per cell, the RSS peak above the start (MiB)."""
    torch = setup()
    sizes, tokens, _, new_tokens, _, batch = plan(args)
    out = []
    for kind, mode, t, b, _ in cells(args.models, tokens, batch, []):
        base = build(kind, sizes, max(tokens) + new_tokens)
        models = copies(base, False)
        ids = torch.randint(3, VOCAB, (b, t), generator=torch.Generator().manual_seed(0))
        peak = {}
        for method, model in models.items():
            _call(mode, model, ids, new_tokens)
            with RssSampler() as sampler:
                _call(mode, model, ids, new_tokens)
            peak[method] = sampler.mib
        out.append({"model": kind, "mode": mode, "tokens": t, "compiled": False, "peak_mib": peak})
    return out


def memory_in_child(argv) -> list:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "scripts.bench_model", "--memory-child", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_model: the memory process failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds, nothing compiled (a smoke run)")
    parser.add_argument("--models", nargs="+", choices=["llama", "bert"], default=["llama", "bert"])
    parser.add_argument("--tokens", type=int, nargs="+", default=None, help=f"default {TOKENS}")
    parser.add_argument("--compile-tokens", type=int, nargs="*", default=None,
                        help=f"lengths of the compiled training step (default {COMPILE_TOKENS}; none with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; quick 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory process")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    if args.memory_child:
        print(json.dumps(measure_memory(args)))
        return

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    torch = setup()
    import numba
    import transformers

    from scripts.bench_attention import machine_info

    sizes, tokens, compile_tokens, new_tokens, rounds, batch = plan(args)
    load_before = os.getloadavg()
    results = []
    for kind, mode, t, b, compiled in cells(args.models, tokens, batch, compile_tokens):
        log(f"[{kind} {mode}{' compiled' if compiled else ''}] {b} x {t} tokens ...")
        base = build(kind, sizes, max(tokens + compile_tokens) + new_tokens)
        ids = torch.randint(3, VOCAB, (b, t), generator=torch.Generator().manual_seed(0))
        ms = time_cell(copies(base, compiled), mode, ids, new_tokens, rounds, log)
        results.append({"model": kind, "mode": mode, "tokens": t, "batch": b, "compiled": compiled, "ms": ms,
                        "ratio_to_eager": {m: v / ms["eager"] for m, v in ms.items()}})
        log("   " + "  ".join(f"{m} {v:.1f} ms ({v / ms['eager']:.2f}x)" for m, v in ms.items()))
    for cell in results:  # the compiled step against the same method's eager step
        if cell["compiled"]:
            eager = next(c for c in results if not c["compiled"] and c["model"] == cell["model"]
                         and c["mode"] == cell["mode"] and c["tokens"] == cell["tokens"])
            cell["compiled_over_eager"] = {m: v / eager["ms"][m] for m, v in cell["ms"].items()}
    if not args.no_memory:
        log("[peak memory] a second process ...")
        for entry in memory_in_child(argv):
            for cell in results:
                if all(cell[k] == entry[k] for k in ("model", "mode", "tokens", "compiled")):
                    cell["peak_mib"] = entry["peak_mib"]
    info = machine_info()
    info.update(loadavg_before=load_before, loadavg_after=os.getloadavg(), transformers=transformers.__version__,
                numba_threads=numba.get_num_threads())
    payload = {
        "what": "median thread time (ms) of a training step (forward + backward of the LM loss) or of greedy "
                "generation, per attention method; ratio = time / transformers' eager softmax in the same rounds",
        "clock": "cpu", "threads": 1, "rounds": rounds, "new_tokens": new_tokens, "sizes": sizes, "vocab": VOCAB,
        "mappings": MAPPINGS, "memory": "peak RSS above the start of one eager step (MiB), sampled every 0.2 ms "
                                        "in a second process with MALLOC_MMAP_THRESHOLD_=65536; approximate",
        "targets": TARGETS, "machine": info, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
