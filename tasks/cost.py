"""What finished runs' models cost relative to a baseline run's: time per training step and per decoded sentence,
measured in one process, interleaved, beside the time per epoch their records report.

    python -m tasks.cost RUN_DIR [RUN_DIR ...] [--baseline softmax] [--steps 20] [--rounds 3] [--split test]
                         [--out results/transformer/cost.json] [key=value ...]
    make cost RUNS="multirun/multi30k/*/experiment=multi30k_transformer_cpu,seed=1" OUT=results/transformer/cost.json

Each run's model is rebuilt from its run dir (``tasks.evaluate.load_run_config``, with the ``key=value`` overrides,
e.g. ``shared=...`` where the data moved) and its scored checkpoint loaded, so every mapping runs with the sparsity
and the γ/λ/α it learned: a freshly initialised model's nearly uniform scores cost some mappings far more than a
trained one's. Round r times every run once, in an order rotated by r, on the runs' thread count: ``--steps``
training steps (forward, backward, gradient clipping, Adam step, on a copy of the model: the checkpoint's weights
stay for decoding; the same first batches of epoch 1 for every run) and beam search over the whole ``--split``
(the task's decoding settings). Medians over rounds are kept and divided by the baseline's: the ratios are what to
compare, since a shared machine moves absolute times alike for runs timed in turn. The fastest round's ratio (each
run's least time over the baseline's least) and the spread of the rounds (slowest / fastest) stand beside: on a
machine whose load comes and goes, the least time is the estimate least touched by it, and a spread of tens of
percent says the medians' ratios are no finer than that. The records' time per epoch and
decoding time, taken when the runs ran (under whatever load the machine had then), are shown beside.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from . import records
from .build import build_task
from .checkpoints import CheckpointError, load_checkpoint_file, load_model_state
from .evaluate import load_run_config, scored_checkpoint
from .files import atomic_write
from .optim import build_optimizer
from .runtime import move_to, set_threads


def describe(config: dict) -> str:
    """A run's configuration in a few words: its attention, with what sets it apart from the attention's default
    run (α learned per head, structured mappings in some attention kinds only)."""
    name = config["attention"]["name"]
    model = config["task"].get("model") or {}
    if name == "entmax" and "alpha" in (model.get("learn") or ()):
        name = "entmax (α learned)"
    fixed = {kind: mapping for kind, mapping in (model.get("mappings") or {}).items() if mapping}
    if fixed:
        name += " (" + ", ".join(f"{kind} {mapping}" for kind, mapping in sorted(fixed.items())) + ")"
    return name


class TimedRun:
    """One finished run, ready to time: its task (data, vocabulary), its scored model for decoding and a copy with
    an optimizer for training steps."""

    def __init__(self, run_dir: Path, overrides=(), steps: int = 20):
        self.run_dir = Path(run_dir)
        config = load_run_config(self.run_dir, overrides)
        self.label = describe(config)
        self.attention = config["attention"]["name"]
        self.seed = config.get("seed")
        trainer = config.get("trainer") or {}
        self.threads = config["task"].get("threads") or trainer.get("threads")
        self.grad_clip = trainer.get("grad_clip")
        self.task = build_task(config)
        self.task.device = torch.device("cpu")
        self.task.setup()
        path = records.record_path(config["results_dir"], self.task.name, self.attention, config["run_name"])
        self.record = json.loads(path.read_text()) if path.exists() else None
        checkpoint = scored_checkpoint(self.run_dir, self.record)
        self.model = self.task.build_model()
        load_model_state(self.model, load_checkpoint_file(checkpoint), checkpoint,
                         "Time it with the code and config that wrote it.")
        self.model.eval()
        self.trained = copy.deepcopy(self.model).train()
        self.optimizer = build_optimizer([p for p in self.trained.parameters() if p.requires_grad],
                                         trainer.get("optimizer") or {"name": "adam", "lr": 1e-4})
        generator = torch.Generator().manual_seed(int(self.seed or 0))
        self.batches = [move_to(batch, torch.device("cpu"))
                        for batch in itertools.islice(self.task.train_batches(0, generator), steps)]
        if len(self.batches) < steps:
            raise ValueError(f"{self.run_dir}: its training set gives {len(self.batches)} batches, fewer than "
                             f"--steps {steps}")
        self.step_seconds: list[float] = []
        self.decode_seconds: list[float] = []
        self.sentences = 0

    def time_steps(self) -> None:
        set_threads(self.threads)
        start = time.perf_counter()
        for batch in self.batches:
            loss, _ = self.task.training_loss(self.trained, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.trained.parameters(), self.grad_clip)
            self.optimizer.step()
        self.step_seconds.append((time.perf_counter() - start) / len(self.batches))

    def time_decoding(self, split: str) -> None:
        set_threads(self.threads)
        with torch.no_grad():
            start = time.perf_counter()
            outputs, _ = self.task.decode(self.model, split)
            self.decode_seconds.append(time.perf_counter() - start)
        self.sentences = len(outputs)

    def as_recorded(self) -> dict:
        """The record's own timings: seconds per epoch (training only, and with validation) and per step."""
        if not self.record:
            return {}
        history = self.record.get("history") or []
        train = [h["train_seconds"] for h in history if h.get("train_seconds") is not None]
        steps = self.record.get("steps")
        epochs = self.record.get("epochs") or len(history)
        test = (self.record.get("metrics") or {}).get("test") or {}
        out = {"epoch_s": self.record.get("time_per_epoch_s"), "commit": (self.record.get("git") or {}).get("commit")}
        if train:
            out["train_epoch_s"] = statistics.median(train)
            if steps and epochs:
                out["step_s"] = sum(train) / steps if len(train) == epochs else None
        if test.get("decode_seconds") and test.get("decode_sentences"):
            out["sentence_ms"] = 1000 * test["decode_seconds"] / test["decode_sentences"]
        return out


def measure(runs: list[TimedRun], baseline: str, rounds: int, split: str, progress=print) -> dict:
    labels = [run.label for run in runs]
    if baseline not in labels:
        raise ValueError(f"--baseline {baseline!r} is none of the runs' configurations: {labels}")
    if len(set(labels)) < len(labels):
        raise ValueError(f"two runs of the same configuration ({labels}): time one run per configuration")
    for r in range(rounds):
        order = runs[r % len(runs):] + runs[: r % len(runs)]
        for run in order:
            run.time_steps()
            run.time_decoding(split)
        progress(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{run.label} {1000 * run.step_seconds[-1]:.0f} ms/step {run.decode_seconds[-1]:.1f} s" for run in runs))
    base = runs[labels.index(baseline)]
    base_step, base_decode = statistics.median(base.step_seconds), statistics.median(base.decode_seconds)
    rows = []
    for run in runs:
        step, decode = statistics.median(run.step_seconds), statistics.median(run.decode_seconds)
        rows.append({"label": run.label, "attention": run.attention, "seed": run.seed, "run_dir": str(run.run_dir),
                     "step_ms": 1000 * step, "step_ratio": step / base_step,
                     "step_ratio_fastest": min(run.step_seconds) / min(base.step_seconds),
                     "step_spread": max(run.step_seconds) / min(run.step_seconds),
                     "sentence_ms": 1000 * decode / max(run.sentences, 1), "decode_ratio": decode / base_decode,
                     "decode_ratio_fastest": min(run.decode_seconds) / min(base.decode_seconds),
                     "decode_spread": max(run.decode_seconds) / min(run.decode_seconds),
                     "step_s_rounds": run.step_seconds, "decode_s_rounds": run.decode_seconds,
                     "sentences": run.sentences, "recorded": run.as_recorded()})
    for row in rows:
        recorded, base_recorded = row["recorded"], rows[labels.index(baseline)]["recorded"]
        if recorded.get("epoch_s") and base_recorded.get("epoch_s"):
            recorded["epoch_ratio"] = recorded["epoch_s"] / base_recorded["epoch_s"]
    return {"baseline": baseline, "rounds": rounds, "split": split, "rows": rows}


def table(result: dict) -> str:
    """The markdown table of a measurement."""
    base = result["baseline"]
    lines = [f"| configuration | train step (ms) | ÷ {base} | fastest ÷ | spread | decoded sentence (ms) | ÷ {base} "
             f"| fastest ÷ | spread | epoch as run (s) | ÷ {base} |", "|---|" + "---:|" * 10]
    for row in result["rows"]:
        recorded = row["recorded"]
        epoch = f"{recorded['epoch_s']:.0f}" if recorded.get("epoch_s") else "–"
        epoch_ratio = f"{recorded['epoch_ratio']:.2f}" if recorded.get("epoch_ratio") else "–"
        # measurements written before the fastest-round columns existed have none: a dash, not a made-up number
        fastest = {key: f"{row[key]:.2f}" if key in row else "–"
                   for key in ("step_ratio_fastest", "step_spread", "decode_ratio_fastest", "decode_spread")}
        lines.append(f"| {row['label']} | {row['step_ms']:.0f} | {row['step_ratio']:.2f} "
                     f"| {fastest['step_ratio_fastest']} | {fastest['step_spread']} | {row['sentence_ms']:.1f} "
                     f"| {row['decode_ratio']:.2f} | {fastest['decode_ratio_fastest']} | {fastest['decode_spread']} "
                     f"| {epoch} | {epoch_ratio} |")
    legend = (f"÷ {base}: medians over {result['rounds']} rounds, divided; fastest ÷: least time over the baseline's "
              "least; spread: a configuration's slowest round over its fastest.")
    return "\n".join(lines) + "\n\n" + legend + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasks.cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run dirs (made by tasks.train: .hydra/, checkpoints/), then key=value "
                                           "overrides applied to every run's config")
    p.add_argument("--baseline", default="softmax", help="the configuration the ratios divide by")
    p.add_argument("--steps", type=int, default=20, help="training steps per run and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--split", default="test", help="the split beam-decoded per run and round")
    p.add_argument("--out", default=None, help="JSON to write (the markdown table goes beside it, .md)")
    args = p.parse_args(argv)
    # a run dir's own name may hold "=" (experiment=...,seed=1): an argument is a run dir when it has .hydra/
    run_dirs = [r for r in args.runs if Path(r, ".hydra").is_dir() or "=" not in r]
    overrides = [r for r in args.runs if r not in run_dirs]
    if not run_dirs:
        p.error("no run dir given")
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be at least 1")
    try:
        runs = [TimedRun(Path(r), overrides, args.steps) for r in run_dirs]
        result = measure(runs, args.baseline, args.rounds, args.split,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result.update(steps=args.steps, threads=sorted({run.threads for run in runs}, key=str), overrides=overrides,
                  command=" ".join(["python -m tasks.cost", *(argv if argv is not None else sys.argv[1:])]),
                  git=records.git_info(), finished=records.now(), host=records.environment().get("cpu"))
    print(table(result), end="")
    if args.out:
        out = atomic_write(args.out, json.dumps(result, indent=1, default=str))
        atomic_write(out.with_suffix(".md"), f"Made by `{result['command']}` at {result['git']['commit']}"
                     f"{' (dirty)' if result['git']['dirty'] else ''}, {result['finished']}.\n\n" + table(result))
        print(f"written to {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
