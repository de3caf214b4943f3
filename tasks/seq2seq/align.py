"""Alignment quality of a trained translation model's attention: AER, precision and recall against gold word
alignments (Och & Ney, 2003), as ``make align RUN=<run dir>``.

    python -m scripts.align outputs/multi30k/fusedmax/experiment=multi30k_cpu [--gold DIR] [--results DIR]

The model of a finished run is rebuilt from its resolved config (``<run>/.hydra/config.yaml``: the task is
built by ``tasks.build.build_task`` as for training, ``setup()`` rebuilds the vocabulary from the training data)
and its best checkpoint (``<run>/checkpoints/best.pt``). It then *force-decodes* each gold pair: the reference
translation is fed as the decoder input (teacher forcing, eval mode, no dropout), and the attention row of the step
that predicts target word j is read as that word's alignment to the source:

- ``argmax``: one link per target word, to its most attended source word;
- ``support``: a link to every source word with a nonzero weight (sparse mappings only: softmax's support is
  every word, so its support scores are not reported).

``aer_diagonal`` is the AER of a model-free reference (target word j linked to the source word at the same
relative position), to read the others against.

Gold data (``--gold``, default ``../shared/data/alignments/deen`` next to the checkout): ``test.de-en`` holds
``German ||| English`` (tokenized), ``deen.talp`` the links of each pair, ``i-j`` sure and ``ipj`` possible,
1-based, German position first (the RWTH German-English Europarl alignments). Sure links are also possible
(S ⊆ P). Over the whole set, with A the predicted links:

    precision = |A ∩ P| / |A|      recall = |A ∩ S| / |S|      AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)

The gold sentences are split on whitespace (they are tokenized already; re-tokenizing could split them
differently and break the link positions) and lowercased like the model's data; words outside the model's
vocabulary become <unk>, and their share is reported (``oov_rate``, per side): models trained on Multi30k captions
meet many unknown words in parliament speeches, so compare mappings with each other, not with aligners.

The result goes to ``<run>/alignment.json`` and into the run's record(s) under ``metrics.alignment``: every
record JSON under the results folders whose ``run_dir`` is this run (the config's ``results_dir``, the
checkout's ``results/``, and ``--results``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.checkpoints import CheckpointError, load_checkpoint_file
from tasks.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GOLD = ROOT.parent / "shared" / "data" / "alignments" / "deen"
SPARSE_FREE = ("softmax",)  # mappings whose support is every unmasked word


# ------------------------------------------------------------------------------------------------- gold data
@dataclass
class GoldPair:
    de: list[str]
    en: list[str]
    sure: set[tuple[int, int]]  # (German position, English position), 0-based
    possible: set[tuple[int, int]]  # ⊇ sure


def read_gold(directory: str | os.PathLike, text: str = "test.de-en", links: str = "deen.talp") -> list[GoldPair]:
    directory = Path(directory)
    text_path, links_path = directory / text, directory / links
    for path in (text_path, links_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: gold alignments not found. Pass --gold DIR (make align GOLD=DIR) with {text} "
                "('German ||| English' per line) and {links} ('i-j' sure, 'ipj' possible, 1-based, German first)")
    lines = text_path.read_text(encoding="utf-8").splitlines()
    link_lines = links_path.read_text(encoding="utf-8").splitlines()
    if len(lines) != len(link_lines):
        raise ValueError(f"{directory}: {len(lines)} sentence pairs but {len(link_lines)} lines of links")
    pairs = []
    for number, (line, link_line) in enumerate(zip(lines, link_lines), 1):
        if "|||" not in line:
            raise ValueError(f"{text_path}:{number}: expected 'German ||| English'")
        de, en = (side.split() for side in line.split("|||", 1))
        sure, possible = set(), set()
        for link in link_line.split():
            kind = "p" if "p" in link else "-"
            try:
                i, j = (int(x) - 1 for x in link.split(kind))
            except ValueError:
                raise ValueError(f"{links_path}:{number}: bad link {link!r} (expected i-j or ipj)") from None
            if not (0 <= i < len(de) and 0 <= j < len(en)):
                raise ValueError(f"{links_path}:{number}: link {link} is outside the sentence pair "
                                 f"({len(de)} x {len(en)} words)")
            possible.add((i, j))
            if kind == "-":
                sure.add((i, j))
        pairs.append(GoldPair(de, en, sure, possible))
    return pairs


# ------------------------------------------------------------------------------------------------- the metric
def alignment_scores(predicted, sure, possible) -> dict:
    """Och & Ney's precision, recall and AER over a corpus: lists of link sets, one per sentence pair."""
    a = s = a_s = a_p = 0
    for pred, gold_s, gold_p in zip(predicted, sure, possible, strict=True):
        pred = set(pred)
        a += len(pred)
        s += len(gold_s)
        a_s += len(pred & set(gold_s))
        a_p += len(pred & (set(gold_p) | set(gold_s)))
    return {
        "aer": 1.0 - (a_s + a_p) / (a + s) if a + s else 0.0,
        "precision": a_p / a if a else 0.0,
        "recall": a_s / s if s else 0.0,
        "links": a,
    }


def links_from_attention(matrix: torch.Tensor, kind: str = "argmax") -> set[tuple[int, int]]:
    """(source position, target position) links from a (target × source) attention matrix."""
    if kind == "argmax":
        return {(int(i), j) for j, i in enumerate(matrix.argmax(dim=-1).tolist())}
    if kind == "support":
        return {(int(i), int(j)) for j, i in torch.nonzero(matrix > 0).tolist()}
    raise ValueError(f"links_from_attention: kind must be 'argmax' or 'support', got {kind!r}")


# ------------------------------------------------------------------------------------------------- the model
def force_decode(model, src_ids: list[list[int]], tgt_ids: list[list[int]], batch_size: int = 32,
                 device="cpu") -> list[torch.Tensor]:
    """The attention (len(tgt) × len(src)) of the model fed the reference targets: row j is the step that
    predicts target word j (the final <eos> step is dropped)."""
    from . import data as D

    model.eval()
    out: list = [None] * len(src_ids)
    pairs = list(zip(src_ids, tgt_ids))
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            index = list(range(start, min(start + batch_size, len(pairs))))
            batch = D.collate([pairs[i] for i in index], index).to(device)
            _, attention = model(batch.src, batch.src_lengths, batch.tgt_in)
            for b, i in enumerate(index):
                out[i] = attention[b, : len(tgt_ids[i]), : len(src_ids[i])].float().cpu()
    return out


def evaluate(task, model, gold: list[GoldPair], batch_size: int = 32) -> dict:
    """AER / precision / recall (argmax, and support for sparse mappings) and OOV rates of ``model``."""
    src_lang = task.data_cfg.get("src_lang", "de")
    tgt_lang = task.data_cfg.get("tgt_lang", "en")
    if {src_lang, tgt_lang} != {"de", "en"}:
        raise ValueError(f"the gold alignments are German-English; this run translates {src_lang}->{tgt_lang}")
    lower = bool(task.data_cfg.get("lowercase", True))

    def words(tokens):
        return [t.lower() for t in tokens] if lower else list(tokens)

    de_is_source = src_lang == "de"
    sources = [words(p.de if de_is_source else p.en) for p in gold]
    targets = [words(p.en if de_is_source else p.de) for p in gold]

    def orient(links):  # gold links are (German, English): make them (source, target)
        return {(i, j) if de_is_source else (j, i) for i, j in links}

    sure = [orient(p.sure) for p in gold]
    possible = [orient(p.possible) for p in gold]
    src_ids = [task.src_vocab.encode(s) for s in sources]
    tgt_ids = [task.tgt_vocab.encode(t) for t in targets]
    unk = task.src_vocab.unk_id
    src_oov = sum(i == unk for ids in src_ids for i in ids)
    tgt_oov = sum(i == task.tgt_vocab.unk_id for ids in tgt_ids for i in ids)
    n_src = sum(len(ids) for ids in src_ids)
    n_tgt = sum(len(ids) for ids in tgt_ids)

    attentions = force_decode(model, src_ids, tgt_ids, batch_size=batch_size, device=task.device)
    result = {"sentences": len(gold), "mapping": task.attention_name}
    argmax = alignment_scores([links_from_attention(a, "argmax") for a in attentions], sure, possible)
    result.update({k: argmax[k] for k in ("aer", "precision", "recall")})
    # a reference point that uses no model: target word j linked to the source word at the same relative position
    diagonal = [{(min(int(j * len(s) / len(t)), len(s) - 1), j) for j in range(len(t))} if s and t else set()
                for s, t in zip(sources, targets)]
    result["aer_diagonal"] = alignment_scores(diagonal, sure, possible)["aer"]
    if task.attention_name not in SPARSE_FREE:
        support = alignment_scores([links_from_attention(a, "support") for a in attentions], sure, possible)
        result.update({f"{k}_support": support[k] for k in ("aer", "precision", "recall")})
        result["links_per_word_support"] = support["links"] / max(n_tgt, 1)
    else:
        result.update({"aer_support": None, "precision_support": None, "recall_support": None,
                       "links_per_word_support": None})
    result.update({
        "oov_rate": (src_oov + tgt_oov) / max(n_src + n_tgt, 1),
        "src_oov_rate": src_oov / max(n_src, 1),
        "tgt_oov_rate": tgt_oov / max(n_tgt, 1),
        "sure_links": sum(len(s) for s in sure),
        "possible_links": sum(len(p) for p in possible),
        "direction": f"{src_lang}->{tgt_lang}",
    })
    return result


def resolved_config(run_dir: str | os.PathLike):
    """The run's config with every interpolation resolved. ``.hydra/config.yaml`` keeps Hydra's own
    interpolations (``${hydra:runtime.cwd}``, the run name), which only resolve inside a Hydra app: they are
    pointed at the ``hydra`` node saved beside it in ``.hydra/hydra.yaml``."""
    import re

    from omegaconf import OmegaConf

    from tasks.resolvers import register_resolvers

    register_resolvers()  # the saved config's ${run_name_from:...}

    saved = Path(run_dir) / ".hydra"
    text = (saved / "config.yaml").read_text(encoding="utf-8")
    text = re.sub(r"\$\{hydra:([^}]+)\}", r"${hydra.\1}", text)
    cfg = OmegaConf.create(text)
    if (saved / "hydra.yaml").is_file():
        cfg = OmegaConf.merge(cfg, OmegaConf.load(saved / "hydra.yaml"))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    return OmegaConf.create(resolved)


def load_run(run_dir: str | os.PathLike):
    """(task, model, resolved config) of a finished run: the task from its config, the weights of best.pt."""
    from omegaconf import OmegaConf

    from tasks.build import build_task

    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoints" / "best.pt"
    for path in (run_dir / ".hydra" / "config.yaml", checkpoint):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run_dir} the folder of a finished run "
                                    "(outputs/<task>/<attention>/<run>)?")
    cfg = resolved_config(run_dir)
    task = build_task(OmegaConf.to_container(cfg, resolve=True))
    if getattr(task, "kind", None) != "translation":
        raise ValueError(f"{run_dir}: task {cfg.task.name} is not a translation task")
    task.setup()
    model = task.build_model()
    state = load_checkpoint_file(checkpoint)  # never runs code from the file
    model.load_state_dict(state["model"])
    return task, model, cfg


def find_records(run_dir: str | os.PathLike, roots) -> list[Path]:
    """Every run record (JSON with a ``run_dir``) under ``roots`` whose run_dir is ``run_dir``."""
    target = Path(run_dir).resolve()
    found = []
    seen = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.json")):
            if path.resolve() in seen or path.name == "alignment.json":
                continue
            seen.add(path.resolve())
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("run_dir") and Path(record["run_dir"]).resolve() == target:
                found.append(path)
    return found


def run_alignment(run_dir, gold_dir=DEFAULT_GOLD, results=(), batch_size: int = 32, update_records: bool = True):
    """Evaluate the run, write ``<run>/alignment.json`` and ``metrics.alignment`` of its record(s)."""
    from tasks import records as R

    run_dir = Path(run_dir)
    gold = read_gold(gold_dir)
    task, model, cfg = load_run(run_dir)
    result = evaluate(task, model, gold, batch_size=batch_size)
    result["gold"] = str(Path(gold_dir).resolve())
    result["checkpoint"] = str((run_dir / "checkpoints" / "best.pt").resolve())
    atomic_write(run_dir / "alignment.json", json.dumps(result, indent=2) + "\n")
    updated = []
    if update_records:
        roots = [Path(r) for r in results] + [Path(cfg.get("results_dir") or ROOT / "results"), ROOT / "results"]
        paths = find_records(run_dir, roots)
        if not paths:  # the path the harness would have written
            guess = R.record_path(cfg.get("results_dir") or ROOT / "results", cfg.task.name, cfg.attention.name,
                                  cfg.run_name)
            paths = [guess] if guess.is_file() else []
        for path in paths:
            record = json.loads(path.read_text())
            record.setdefault("metrics", {})["alignment"] = result
            R.write_record(path, record)
            updated.append(path)
    return result, updated


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="AER / precision / recall of a translation run's attention "
                                                 "against gold word alignments (force-decoding the references)")
    parser.add_argument("run", help="the run folder: outputs/<task>/<attention>/<run> (with .hydra/ and "
                                    "checkpoints/best.pt)")
    parser.add_argument("--gold", default=str(DEFAULT_GOLD),
                        help="folder with test.de-en and deen.talp (default: ../shared/data/alignments/deen)")
    parser.add_argument("--results", action="append", default=[],
                        help="another folder to search for the run's record (repeatable)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-record", action="store_true", help="only write <run>/alignment.json")
    args = parser.parse_args(argv)
    try:
        result, updated = run_alignment(args.run, args.gold, args.results, args.batch_size, not args.no_record)
    except (FileNotFoundError, ValueError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    support = ("" if result["aer_support"] is None else
               f"; support: AER {result['aer_support']:.3f}, precision {result['precision_support']:.3f}, "
               f"recall {result['recall_support']:.3f}")
    print(f"{result['mapping']} ({result['direction']}, {result['sentences']} sentences): argmax AER "
          f"{result['aer']:.3f}, precision {result['precision']:.3f}, recall {result['recall']:.3f}{support}; "
          f"OOV rate {result['oov_rate']:.1%} (source {result['src_oov_rate']:.1%}, target "
          f"{result['tgt_oov_rate']:.1%})")
    print(f"wrote {Path(args.run) / 'alignment.json'}"
          + "".join(f"\nrecord: {p}" for p in updated) + ("" if updated or args.no_record else
                                                           "\nno run record found to update"))
    return 0
