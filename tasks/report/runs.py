"""Loading run records and reading the fields the report needs from them.

A run record is ``results/<task>/<attention>/<run>.json`` (see ``tasks/records.py``):
``{"task", "attention": {"name", ...params}, "seed", "config", "metrics": {"valid": {...}, "test": {...}},
"epochs", "time_per_epoch_s", "wall_time_s", "git_commit", "started", "finished"}``.
The readers here are lenient about where a field lives (top level or inside ``config``), so records written by
the harness, by an older harness, or mapped from W&B all work.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

from tasks.records import changes_result, flatten, get, matches

ATTENTION_ORDER = ("softmax", "sparsemax", "fusedmax", "oscarmax")  # the paper's four: a row each, always
# every mapping of attention/, in the order rows and figures list them
MAPPING_ORDER = ATTENTION_ORDER + ("entmax", "sq_pnorm_max")


def mapping_rank(name: str) -> int:
    return MAPPING_ORDER.index(name) if name in MAPPING_ORDER else len(MAPPING_ORDER)
# parameters that never distinguish two rows of a table
_IGNORED_PARAMS = {"name", "_target_"}
# sections of metrics.<split> that are not test sets: paired-test statistics, a Transformer's statistics per attention
# head and its parameters learned per head (tasks/seq2seq/transformer.py)
NOT_TEST_SETS = ("per_example", "heads", "learned")


def warn(message: str) -> None:
    print(f"[report] {message}", file=sys.stderr)


def load_local(results: str | Path) -> list[dict]:
    """Every run record under ``results/<task>/<attention>/*.json``; unreadable files, files that are not run
    records (no ``task`` or ``attention``) and records holding a metric as a string are reported and skipped."""
    results = Path(results)
    records = []
    if not results.is_dir():
        warn(f"no results directory {results}: no local runs")
        return records
    for path in sorted(results.glob("*/*/*.json")):
        if path.parts[-3] in ("tables", "figures", "cpu") or path.name.endswith(".attention_test.json"):
            continue  # (the attention maps a SNLI run writes beside its record are not records)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            warn(f"skipping {path}: {error}")
            continue
        problem = record_problem(record)
        if problem:
            warn(f"skipping {path}: {problem}")
            continue
        record.setdefault("path", str(path))
        attach_evaluations(record, path.with_name(f"{path.stem}.evaluations"))
        records.append(record)
    return records


def record_problem(record) -> str | None:
    """Why ``record`` cannot enter a table (None: it can): not a run record, or a metric stored as a string (a
    hand-edited or foreign file: "34.5" would be averaged as a number, "n/a" silently dropped)."""
    if not isinstance(record, dict):
        return f"not a run record (a JSON {type(record).__name__}, not an object)"
    missing = [key for key in ("task", "attention") if key not in record]
    if missing:
        return f"not a run record: no {' or '.join(repr(k) for k in missing)} (tasks/records.py writes both)"
    for key, value in flatten(record.get("metrics") or {}).items():
        if isinstance(value, str) and ".per_example." not in f".{key}." and _parses_as_number(value):
            return (f"metrics.{key} is the string {value!r}, not a number: fix the record (write it as a number) "
                    f"for it to count")
    return None


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def attach_evaluations(record: dict, folder: Path) -> None:
    """Test sets scored after the run by ``make evaluate`` (``<record stem>.evaluations/*.json``) join the record's
    ``metrics.test`` as sections (``metrics.test.<test set>``, as DUC-2004 is for a Gigaword run), when the evaluation
    re-scored the record's own test set to the same numbers (the same checkpoint, decoded the same way). What the
    record holds is never replaced; an evaluation that disagrees is reported and left out."""
    if not folder.is_dir():
        return
    test = get(record, "metrics.test")
    if not isinstance(test, dict):
        return
    for path in sorted(folder.glob("*.json")):
        try:
            evaluation = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            warn(f"skipping {path}: {error}")
            continue
        scored = get(evaluation, "metrics") or {}
        if evaluation.get("split") != "test" or not isinstance(scored, dict):
            continue
        same = [k for k in (record.get("metric"), "bleu", "rougeL_f1", "accuracy") if k in test and k in scored]
        if not same or any(abs(float(test[k]) - float(scored[k])) > 1e-6 for k in same):
            warn(f"skipping {path}: its test metrics ({', '.join(f'{k} {scored.get(k)}' for k in same) or 'none'}) "
                 f"differ from the record's ({', '.join(f'{k} {test.get(k)}' for k in same)}): another checkpoint?")
            continue
        for name, section in scored.items():
            if isinstance(section, dict) and name not in NOT_TEST_SETS and name not in test:
                test[name] = section
                record.setdefault("evaluated_later", []).append(name)


def attention_name(record: dict) -> str:
    attention = record.get("attention")
    return attention if isinstance(attention, str) else str(get(attention, "name", "?"))


def attention_params(record: dict) -> dict:
    attention = record.get("attention")
    if not isinstance(attention, dict):
        return {}
    # tasks/records.py: {"name", "params": {...}}; W&B configs and older records: {"name", ...params}
    flat = {**{k: v for k, v in attention.items() if k != "params"}, **(attention.get("params") or {})}
    params = {k: v for k, v in flat.items() if k not in _IGNORED_PARAMS and not str(k).startswith("_")}
    learned = learned_params(record)
    if learned is not None:
        params["learned"] = learned
    return params


def learned_params(record: dict) -> str | None:
    """The mapping parameters a Transformer run learned per head (``task.model.learn``, less those its mapping does
    not have): "gamma,alpha" for adaptive entmax; None for a run that learns none per head."""
    learn = get(record, "config.task.model.learn")
    if not isinstance(learn, (list, tuple)):
        return None
    from attention import DEFAULTS

    own = DEFAULTS.get(attention_name(record), {})
    return ",".join(str(p) for p in learn if p in own) or None


def task_of(record: dict) -> str:
    task = record.get("task")
    if isinstance(task, dict):
        task = task.get("name")
    return str(task)


_LANG_KEYS = (("src_lang", "tgt_lang"), ("src", "tgt"), ("source", "target"), ("source_lang", "target_lang"))


def pair_of(record: dict) -> str | None:
    """The language pair of a translation run as ``"de-en"``, from the record or its config, or None."""
    for where in (record, record.get("config") or {}, get(record, "config.task") or {},
                  get(record, "config.data") or {}, get(record, "config.task.data") or {}):
        if not isinstance(where, dict):
            continue
        pair = where.get("pair") or where.get("lang_pair") or where.get("language_pair")
        if isinstance(pair, str) and pair:
            return pair.replace("→", "-").replace("_", "-")
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            return f"{pair[0]}-{pair[1]}"
        for src, tgt in _LANG_KEYS:
            if isinstance(where.get(src), str) and isinstance(where.get(tgt), str) and len(where[src]) <= 5:
                return f"{where[src]}-{where[tgt]}"
    return None


def seed_of(record: dict):
    return record.get("seed", get(record, "config.seed"))


def test_metric(record: dict, metric: str):
    """``metrics.test.<metric>`` as a float, or None (missing, null, NaN)."""
    return split_metric(record, "test", metric)


def split_metric(record: dict, split: str, metric: str):
    """``metrics.<split>.<metric>`` as a float, or None (missing, null, NaN)."""
    value = get(record, f"metrics.{split}.{metric}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def finished_key(record: dict) -> tuple:
    """Sort key: the latest finished run last (records without a time sort first)."""
    return (str(record.get("finished") or ""), str(record.get("started") or ""), str(record.get("path") or ""))


def varying_keys(mappings: Iterable[dict]) -> list[str]:
    """The keys (sorted) whose values are not all equal across ``mappings``; a missing key counts as None."""
    mappings = list(mappings)
    keys = sorted({k for m in mappings for k in m})
    return [k for k in keys if len({json.dumps(m.get(k), sort_keys=True, default=str) for m in mappings}) > 1]


def row_labels(records: Iterable[dict]) -> dict[int, str]:
    """A table row label per record (by ``id``): the attention name, plus the parameters that differ between
    runs of that attention (``fusedmax (lam=0.05)``), so that a λ sweep gives one row per value."""
    records = list(records)
    params_by_name: dict[str, list[dict]] = {}
    for record in records:
        params_by_name.setdefault(attention_name(record), []).append(attention_params(record))
    varying = {name: varying_keys(all_params) for name, all_params in params_by_name.items()}
    labels = {}
    for record in records:
        name = attention_name(record)
        params = attention_params(record)
        extra = ", ".join(f"{k}={params.get(k)}" for k in varying[name])
        labels[id(record)] = f"{name} ({extra})" if extra else name
    return labels


def attention_sort_key(label: str) -> tuple:
    name = label.split(" ")[0]
    rank = mapping_rank(name)
    return (rank, label)


# ---- which runs are the same experiment: the resolved configuration, without the seed

# settings that never change a result: tasks/records.py's NON_RESULT_KEYS, the same rule as a run's resume identity;
# the seed and the attention are set apart too (a cell averages seeds; rows are split by attention separately)
GROUPED_APART = ("seed", "attention", "task.model.learn")  # learn: per mapping, shown in its row label


def result_config(record: dict) -> dict[str, Any]:
    """The settings of a run that can change its result (flattened): its resolved config minus the seed, the
    attention block (rows are split by attention separately) and the settings that do not change a result
    (``tasks/records.py``)."""
    flat = flatten(record.get("config") or {})
    return {k: v for k, v in flat.items() if changes_result(k) and not matches(k, GROUPED_APART)}


def config_signature(record: dict) -> str:
    return json.dumps(result_config(record), sort_keys=True, default=str)
