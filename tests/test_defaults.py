"""One owner for each default. The mappings' parameters (γ, λ, p, α, oscarmax's variant) are written once, in
attention/defaults.py: the functions, modules, framework and wrappers read that table, and so do the configs
(configs/attention/*.yaml through the ``attention_default`` resolver), so a run records the same values as before."""

import ast
import inspect
import json
from pathlib import Path

import pytest
import yaml
from test_identity import resolved

import attention
from attention.defaults import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"gamma", "lam", "p", "alpha", "variant"}
# parameters of the same name that are not a mapping's default: the figure's own choice of λ
NOT_DEFAULTS = {("plot.py", "mapping_curves", "lam")}


def _literal_defaults(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg in PARAMS and isinstance(default, ast.Constant):
                    yield node.name, arg.arg, default.value


def test_no_mapping_default_is_written_outside_the_table():
    found = [(path.name, *hit) for path in sorted((ROOT / "attention").glob("*.py")) if path.name != "defaults.py"
             for hit in _literal_defaults(path)]
    assert [f for f in found if f[:3] not in NOT_DEFAULTS] == []
    assert found, "the scan finds the figure's own λ: it reads the signatures"


@pytest.mark.parametrize("name", attention.NAMES)
def test_functions_and_modules_take_the_tables_defaults(name):
    for call in (attention.MAPPINGS[name], attention.MODULES[name].__init__):
        signature = inspect.signature(call).parameters
        assert {k: signature[k].default for k in DEFAULTS[name]} == DEFAULTS[name]
    module = attention.build(name)
    assert module.gamma == DEFAULTS[name]["gamma"]
    assert {k: getattr(module, k) for k in DEFAULTS[name]} == DEFAULTS[name]
    assert set(DEFAULTS) == set(attention.NAMES)


def test_the_table_is_what_the_mappings_use(monkeypatch):
    import torch

    x = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name in ("fusedmax", "oscarmax"):
        lam = DEFAULTS[name]["lam"]
        torch.testing.assert_close(attention.MAPPINGS[name](x), attention.MAPPINGS[name](x, lam=lam), rtol=0, atol=0)
        torch.testing.assert_close(attention.regularizer(attention.MAPPINGS[name](x), name),
                                   attention.regularizer(attention.MAPPINGS[name](x), name, lam=lam), rtol=0, atol=0)
    layer = attention.MultiheadAttention(8, 2, mapping="fusedmax", learn_lam=True)
    assert float(layer.log_lam.detach().exp()[0]) == pytest.approx(DEFAULTS["fusedmax"]["lam"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "attention").glob("*.yaml")), ids=lambda p: p.stem)
def test_attention_configs_read_the_library(path):
    """No config writes a mapping's default; composed, each config holds exactly the library's defaults."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = raw["name"]
    assert raw == {"_target_": "attention.build", "name": name,
                   **{k: f"${{attention_default:{name},{k}}}" for k in DEFAULTS[name]}}
    assert resolved(f"attention={name}")["attention"] == {"_target_": "attention.build", "name": name,
                                                           **DEFAULTS[name]}


def test_a_default_run_records_what_the_committed_runs_record():
    """A run made today with a mapping's defaults lands in the same table rows as the committed records: the
    ``config.attention`` it records equals theirs (same keys, values and order)."""
    recorded = {}
    for path in sorted((ROOT / "results" / "cpu").glob("*/*/*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and isinstance(record.get("config"), dict):
            attn = record["config"]["attention"]
            recorded.setdefault(attn["name"], set()).add(json.dumps(attn))
    assert {"softmax", "sparsemax", "fusedmax", "oscarmax"} <= set(recorded)
    for name, seen in recorded.items():
        assert json.dumps(resolved(f"attention={name}")["attention"]) in seen


# ---- the harness's defaults: owned by the config files, which the code reads when it is used without Hydra

TRAINER_YAML = ROOT / "configs" / "trainer" / "default.yaml"
BLOCKS = {  # (config file, block): what the code falls back on
    ("trainer/default.yaml", ()): "tasks.trainer.DEFAULTS",
    **{("task/multi30k.yaml", ("task", b)): f"tasks.seq2seq.task.{b.upper()}_DEFAULTS"
       for b in ("vocab", "train", "decode", "eval")},
    ("task/model/rnn.yaml", ()): "tasks.seq2seq.task.MODEL_DEFAULTS",
    ("task/model/transformer.yaml", ()): "tasks.seq2seq.task.MODEL_KINDS['transformer']",
    ("task/snli.yaml", ("task", "model")): "SNLITask().model_cfg",
    ("task/snli.yaml", ("task", "vocab")): "SNLITask().vocab_cfg",
}


def _block(path, keys):
    node = yaml.safe_load((ROOT / "configs" / path).read_text(encoding="utf-8"))  # an independent reader
    for key in keys:
        node = node[key]
    return node


def test_trainer_without_hydra_takes_the_yaml_defaults(tmp_path):
    from tasks.trainer import Trainer

    want = _block("trainer/default.yaml", ())
    trainer = Trainer(None, {"epochs": 2, "optimizer": {"lr": 0.5}}, tmp_path, seed=1)
    assert trainer.cfg == {**want, "epochs": 2, "optimizer": {**want["optimizer"], "lr": 0.5}}
    assert Trainer(None, None, tmp_path, seed=1).cfg == want


def test_tasks_without_hydra_take_the_yaml_defaults():
    from tasks.seq2seq.task import Seq2SeqTask
    from tasks.snli.task import SNLITask

    task = Seq2SeqTask("t", {}, {"name": "softmax"}, model={"layers": 1}, decode={"beam": 2})
    assert task.model_cfg == {**_block("task/model/rnn.yaml", ()), "layers": 1}
    assert task.decode_cfg == {**_block("task/multi30k.yaml", ("task", "decode")), "beam": 2}
    for block in ("vocab", "train", "eval"):
        assert getattr(task, f"{block}_cfg") == _block("task/multi30k.yaml", ("task", block))
    task = Seq2SeqTask("t", {}, {"name": "softmax"}, model={"kind": "transformer", "heads": 2})
    assert task.model_cfg == {**_block("task/model/transformer.yaml", ()), "heads": 2}
    snli = _block("task/snli.yaml", ("task",))
    task = SNLITask({"name": "softmax"}, model={"hidden": 7})
    assert task.model_cfg == {**snli["model"], "hidden": 7} and task.vocab_cfg == snli["vocab"]
    assert (task.batch_size, task.eval_batch_size, task.attention_examples) == (
        snli["batch_size"], snli["eval_batch_size"], snli["attention_examples"])


def _is_literal(node) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def test_no_copy_of_a_default_block_in_the_code():
    """No dict in tasks/ gives literal values to three or more keys of a defaults block (a copy that could drift)."""
    blocks = {f"{path}:{'.'.join(keys)}": set(_block(path, keys)) for path, keys in BLOCKS}
    copies = []
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                keys = {k.value for k, v in zip(node.keys, node.values)
                        if isinstance(k, ast.Constant) and isinstance(k.value, str) and _is_literal(v)}
                copies += [(str(path.relative_to(ROOT)), node.lineno, name)
                           for name, block in blocks.items() if len(keys & block) >= 3]
    assert copies == []
