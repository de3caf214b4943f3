"""Adding a task, as tasks/README.md ("Adding a task") says: a class (here ``ToyTask``), a config file with its
``report`` section (written to a tmp folder and put on Hydra's search path), and nothing else. It is trained through
the real entry point, recorded, and tabulated by `make tables`'s code under its own label, without a report edit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from tasks.mapping import build_attention
from tasks.stats import AttentionStats

ROOT = Path(__file__).resolve().parents[1]

# step 2 of "Adding a task": its config file, configs/task/<name>.yaml (here in a tmp folder on the search path)
TOY_CONFIG = """\
# @package _global_
task:
  _target_: test_adding_a_task.ToyTask
  name: toy
  examples: 240
  report:
    table: toy
    title: "Toy: does the sequence hold the marked token? Test accuracy (%)"
    metrics:
      - {key: accuracy, label: Accuracy, percent: true}
    label: Toy marks

trainer:
  epochs: 2
  optimizer: {name: adam, lr: 0.05}
"""


class ToyTask:
    """Step 1: the class. A synthetic classification: does a sequence of 8 tokens hold token 1? A learned query
    attends over the tokens; the attended embedding is classified. The protocol is tasks/task.py's ``Task``."""

    metric = "accuracy"
    vocab, length = 10, 8

    def __init__(self, attention: dict, name: str = "toy", seed: int = 1, data_dir: str = "data",
                 examples: int = 240, batch_size: int = 20):
        self.name, self.attention_cfg, self.seed = name, dict(attention), seed
        self.examples, self.batch_size = examples, batch_size
        self.device = torch.device("cpu")

    def setup(self) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        tokens = torch.randint(2, self.vocab, (self.examples, self.length), generator=generator)
        marked = torch.rand(self.examples, generator=generator) < 0.5
        tokens[marked, torch.randint(0, self.length, (int(marked.sum()),), generator=generator)] = 1
        third = self.examples // 3
        self.splits = {"train": (tokens[third:], marked[third:].long()), "valid": (tokens[:third // 2],
                       marked[:third // 2].long()), "test": (tokens[third // 2:third], marked[third // 2:third].long())}

    def build_model(self) -> torch.nn.Module:
        return ToyModel(build_attention(self.attention_cfg), self.vocab)

    def train_batches(self, epoch: int, generator: torch.Generator) -> list:
        tokens, labels = self.splits["train"]
        order = torch.randperm(len(tokens), generator=generator)
        return [(tokens[i], labels[i]) for i in order.split(self.batch_size)]

    def training_loss(self, model, batch):
        tokens, labels = batch
        logits, _ = model(tokens)
        return F.cross_entropy(logits, labels), {}

    def evaluate(self, model, split: str) -> dict:
        tokens, labels = (t.to(self.device) for t in self.splits[split])
        logits, alpha = model(tokens)
        stats = AttentionStats()
        stats.update(alpha)
        return {"accuracy": float((logits.argmax(-1) == labels).float().mean()), **stats.compute()}


class ToyModel(torch.nn.Module):
    def __init__(self, attention: torch.nn.Module, vocab: int, dim: int = 16):
        super().__init__()
        self.embed, self.attention = torch.nn.Embedding(vocab, dim), attention
        self.query = torch.nn.Parameter(torch.randn(dim) * 0.1)
        self.out = torch.nn.Linear(dim, 2)

    def forward(self, tokens):
        states = self.embed(tokens)
        alpha = self.attention(states @ self.query)
        return self.out((alpha.unsqueeze(-1) * states).sum(1)), alpha


def test_a_new_task_is_trained_recorded_and_tabulated_under_its_own_label(tmp_path, capsys):
    (tmp_path / "configs" / "task").mkdir(parents=True)
    (tmp_path / "configs" / "task" / "toy.yaml").write_text(TOY_CONFIG)
    results = tmp_path / "results"
    # step 3: train it like any task (PYTHONPATH: where ToyTask lives; a task in the repository needs none)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tasks.train", "task=toy", "attention=sparsemax", "logger=none",
         f"hydra.searchpath=[file://{tmp_path / 'configs'}]", f"hydra.run.dir={tmp_path / 'run'}",
         f"results_dir={results}", "trainer.threads=1", "trainer.progress=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (path,) = results.glob("toy/sparsemax/*.json")
    record = json.loads(path.read_text())
    assert record["task"] == "toy" and record["config"]["task"]["report"]["label"] == "Toy marks"
    assert 0 <= record["metrics"]["test"]["accuracy"] <= 1 and record["epochs"] == 2

    # step 4: `make tables` (scripts/tables.py -> tasks.report.tables.main) gives it its own table and label
    from tasks.report.tables import main

    assert main(["--results", str(results), "--paper", str(tmp_path / "no-paper.yaml")]) == 0
    toy = (results / "tables" / "toy.md").read_text()
    assert toy.startswith("### Toy: does the sequence hold the marked token? Test accuracy (%)")
    accuracy = 100 * record["metrics"]["test"]["accuracy"]
    assert f"| sparsemax | {accuracy:.2f} | 1 |" in toy
    assert "Toy marks" in (results / "tables" / "headline.md").read_text()
    assert (results / "tables" / "snli.md").exists()  # the paper's tables beside it, empty

    # a record whose task has no report section (and is no task recorded before the key existed) is said, not lost
    del record["config"]["task"]["report"]
    record["task"] = "toy_unreported"
    stray = results / "toy_unreported" / "sparsemax" / "default.json"
    stray.parent.mkdir(parents=True)
    stray.write_text(json.dumps(record))
    capsys.readouterr()
    main(["--results", str(results), "--paper", str(tmp_path / "no-paper.yaml")])
    said = capsys.readouterr().err
    assert f"[report] skipping {stray}: task 'toy_unreported' has no report section" in said
