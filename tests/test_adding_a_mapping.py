"""Adding a mapping is one description in one place: the toy temperature softmax of attention/README.md's section
"Adding a mapping" (its code blocks, run here as they stand) works through every entry point of the library and
the harness: the functional API, build, max_omega / regularizer, the Fenchel–Young loss, scaled_dot_product_attention,
MultiheadAttention (learned per head), the Hugging Face adapter, ``attention=<name>`` in Hydra and the report. Each
test registers it and unregisters it afterwards, so nothing leaks into the other tests."""

import inspect
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck

import attention

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "attention" / "README.md"
BUILTIN = ("softmax", "sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax")


def section_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's section "Adding a mapping", in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Adding a mapping\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def run_block(index: int, namespace: dict) -> dict:
    exec(compile(section_blocks("python")[index], f"{README}: Adding a mapping, block {index + 1}", "exec"), namespace)
    return namespace


def _unregister_everywhere():
    if "attention.huggingface" in sys.modules:
        huggingface = sys.modules["attention.huggingface"]
        if "tempmax" in huggingface.REGISTERED:
            huggingface.unregister("tempmax")
    if "tempmax" in attention.registry.REGISTRY:
        attention.unregister("tempmax")


@pytest.fixture
def toy():
    """The README's definition, registered; unregistered afterwards whatever the test did."""
    try:
        yield run_block(0, {})
    finally:
        _unregister_everywhere()


def test_the_section_has_the_blocks_this_file_runs():
    assert len(section_blocks("python")) == 3 and len(section_blocks("yaml")) == 1
    assert "attention.register(attention.Mapping(" in section_blocks("python")[0]


def test_the_readme_uses_run_as_written(toy):
    names = run_block(1, dict(toy))
    scores, weights = names["scores"], names["weights"]
    allowed = scores > -1
    want = torch.where(allowed, torch.softmax(torch.where(allowed, scores / 0.5, -math.inf), -1), 0)
    torch.testing.assert_close(weights, torch.nan_to_num(want))
    assert type(names["module"]).__name__ == "Tempmax" and names["module"].temperature == 0.5
    assert names["layer"].log_temperature.shape == (4, 1, 1)
    assert names["out"].shape == (3, 4, 6, 8) and names["loss"] >= 0


def test_every_table_lists_it_and_unregister_takes_it_out(toy):
    assert attention.NAMES == (*BUILTIN, "tempmax")
    assert attention.DEFAULTS["tempmax"] == {"gamma": 1.0, "temperature": 2.0}
    assert attention.MAPPINGS["tempmax"] is toy["tempmax"]
    module = attention.MODULES["tempmax"]
    assert module is attention.modules.Tempmax and module.__name__ == "Tempmax"
    signature = inspect.signature(module.__init__).parameters
    assert {k: signature[k].default for k in ("dim", "gamma", "temperature")} == {"dim": -1, "gamma": 1.0,
                                                                                    "temperature": 2.0}
    assert attention.groups_kind("tempmax") == "segments"
    attention.unregister("tempmax")
    assert attention.NAMES == BUILTIN and "tempmax" not in attention.DEFAULTS and "tempmax" not in attention.MODULES
    with pytest.raises(ValueError, match="unknown attention mapping 'tempmax'; valid names: softmax"):
        attention.build("tempmax")


def test_functional_form_is_a_temperature_softmax(toy):
    x = torch.randn(4, 3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = toy["tempmax"](x, dim=1, gamma=0.5, temperature=3.0)
    torch.testing.assert_close(y, torch.softmax(x / 1.5, dim=1))
    mask = torch.ones(4, 1, 7, dtype=torch.bool)
    mask[0, 0, 2:] = False
    mask[1] = False  # a batch entry with no allowed key: zeros, not nan
    y = attention.MAPPINGS["tempmax"](x, mask=mask)
    torch.testing.assert_close(y[0, :, :2], torch.softmax(x[0, :, :2] / 2.0, -1))
    assert (y[0, :, 2:] == 0).all() and (y[1] == 0).all()


def test_backward_gradchecks_in_float64(toy):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.rand(3, 6, generator=g) > 0.3
    mask[2] = False
    temperature = torch.tensor([[0.7], [1.3], [2.0]], dtype=torch.float64, requires_grad=True)
    gamma = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda s, t, gm: toy["tempmax"](s, gamma=gm, temperature=t, mask=mask), (x, temperature, gamma))
    fill = torch.finfo(torch.float64).min  # the Function's contract: masked scores hold finfo.min
    assert gradcheck(lambda s: toy["TempmaxFunction"].apply(torch.where(mask, s, fill), mask.double()), (x,))
    # the module's learnable temperature: an nn.Parameter, learned with the model
    module = attention.build("tempmax", temperature=torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64)))
    module(x).pow(2).sum().backward()
    assert dict(module.named_parameters())["temperature"].grad is not None


def test_max_omega_regularizer_and_the_fenchel_young_loss(toy):
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    value = attention.max_omega(x, "tempmax", gamma=0.5, temperature=3.0)
    torch.testing.assert_close(value, 1.5 * torch.logsumexp(x / 1.5, -1))
    (grad,) = torch.autograd.grad(value.sum(), x)
    y = attention.MAPPINGS["tempmax"](x.detach(), gamma=0.5, temperature=3.0)
    torch.testing.assert_close(grad, y)
    torch.testing.assert_close(attention.regularizer(y, "tempmax", temperature=3.0), 3.0 * (y * y.log()).sum(-1))
    labels = torch.tensor([0, 3, 1, 1, 2])
    loss = attention.fenchel_young_loss(x, labels, "tempmax", gamma=0.5, temperature=3.0, reduction="none")
    torch.testing.assert_close(loss, 1.5 * torch.nn.functional.cross_entropy(x / 1.5, labels, reduction="none"))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    torch.testing.assert_close(grad, y - torch.nn.functional.one_hot(labels, 4).double())
    temperature = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)  # the envelope theorem's ∂/∂T
    criterion = attention.FenchelYoungLoss("tempmax", gamma=0.5, temperature=temperature)
    (grad_t,) = torch.autograd.grad(criterion(x.detach(), labels), temperature)
    t = temperature.detach().clone().requires_grad_()
    direct = (0.5 * t * torch.logsumexp(x.detach() / (0.5 * t), -1) - x.detach()[range(5), labels]).mean()
    torch.testing.assert_close(grad_t, torch.autograd.grad(direct, t)[0])


def test_scaled_dot_product_attention_and_multihead(toy):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=torch.float64, generator=g) for _ in range(3))
    ours = attention.scaled_dot_product_attention(q, k, v, is_causal=True, mapping="tempmax", temperature=2.0)
    theirs = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / (2.0 * math.sqrt(8)))
    torch.testing.assert_close(ours, theirs)
    x = torch.randn(2, 5, 12, dtype=torch.float64, generator=g)
    layer = attention.MultiheadAttention(12, 3, batch_first=True, mapping=toy["TEMPMAX"], temperature=0.5,
                                         learn=("temperature",), learn_gamma=True, dtype=torch.float64)
    assert layer.mapping == "tempmax" and "learned=['gamma', 'temperature']" in repr(layer)
    torch.testing.assert_close(layer.mapping_params()["temperature"], torch.full((3, 1, 1), 0.5, dtype=torch.float64))
    out, _ = layer(x, x, x)
    out.sum().backward()
    assert layer.log_temperature.grad.abs().sum() > 0 and layer.log_gamma.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="learn_lam needs mapping fusedmax or oscarmax, not tempmax"):
        attention.MultiheadAttention(12, 3, mapping="tempmax", learn_lam=True)
    with pytest.raises(ValueError, match="tempmax: temperature must be > 0"):
        attention.MultiheadAttention(12, 3, mapping="tempmax", temperature=-1.0)


def test_multihead_takes_a_callable_as_its_hint_says():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 12, generator=g)
    seen = []

    def halved_softmax(scores, mask=None):
        seen.append(mask)
        return torch.softmax(scores / 2, dim=-1)

    torch.manual_seed(0)
    ours = attention.MultiheadAttention(12, 3, batch_first=True, mapping=halved_softmax)
    torch.manual_seed(0)
    reference = attention.MultiheadAttention(12, 3, batch_first=True, mapping="softmax", gamma=2.0)
    torch.testing.assert_close(ours(x, x, x)[0], reference(x, x, x)[0])
    assert "mapping=halved_softmax" in repr(ours) and len(seen) == 2  # the construction's check, the forward
    with pytest.raises(ValueError, match="learn_gamma needs mapping softmax or sparsemax"):
        attention.MultiheadAttention(12, 3, mapping=halved_softmax, learn_gamma=True)


def test_hugging_face_adapter(toy):
    transformers = pytest.importorskip("transformers")
    huggingface = run_block(2, dict(toy))["attention"].huggingface
    assert huggingface.REGISTERED["tempmax"] == ("tempmax", {"temperature": 0.5})
    huggingface.register("tempmax-1", mapping=toy["TEMPMAX"], temperature=1.0)
    try:
        config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                          pad_token_id=0)
        ids = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(5))
        logits = {}
        for implementation in ("eager", "tempmax-1", "tempmax"):
            torch.manual_seed(0)
            model = transformers.LlamaForCausalLM._from_config(config, attn_implementation=implementation).eval()
            logits[implementation] = model(ids).logits
        # temperature 1 is softmax: transformers' own eager attention
        torch.testing.assert_close(logits["tempmax-1"], logits["eager"], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(logits["tempmax"], logits["eager"], atol=1e-3)
        changed = huggingface.add_parameters(model, learn=("temperature",))
        attn = model.get_submodule(changed[0])
        torch.testing.assert_close(attn.log_temperature.exp(), torch.full((4, 1, 1), 0.5))
        assert set(huggingface.learned_parameters(attn)) == {"temperature"}
        model(ids).logits.sum().backward()
        assert attn.log_temperature.grad.abs().sum() > 0
    finally:
        huggingface.unregister("tempmax-1")
    from transformers import AttentionInterface

    huggingface.unregister("tempmax")
    assert "tempmax" not in AttentionInterface._global_mapping and "tempmax" not in huggingface.REGISTERED


def test_hydra_config_and_the_harness_build(toy, tmp_path):
    pytest.importorskip("hydra")
    from test_identity import resolved

    from tasks.mapping import build_attention

    (tmp_path / "attention").mkdir()
    (tmp_path / "attention" / "tempmax.yaml").write_text(section_blocks("yaml")[0], encoding="utf-8")
    config = resolved("experiment=snli_cpu", "attention=tempmax", f"hydra.searchpath=[file://{tmp_path}]")
    assert config["attention"] == {"_target_": "attention.build", "name": "tempmax", "gamma": 1.0, "temperature": 2.0}
    config = resolved("attention=tempmax", "attention.temperature=0.25", f"hydra.searchpath=[file://{tmp_path}]")
    module = build_attention(config["attention"])
    assert type(module).__name__ == "Tempmax" and module.temperature == 0.25


def test_the_report_gives_its_runs_a_row(toy, tmp_path):
    from test_report_tables import EXP, record, write

    from tasks.report.grouping import build_table
    from tasks.report.render import to_markdown
    from tasks.report.runs import load_local

    for i, (name, accuracy) in enumerate([("softmax", 0.80), ("softmax", 0.82), ("tempmax", 0.81), ("tempmax", 0.85)]):
        write(tmp_path, record("snli", name, i % 2 + 1, {"accuracy": accuracy}), f"run{i}")
    table = build_table(EXP["snli"], load_local(tmp_path), {})
    assert table.rows[-1] == "tempmax" and table.cells[("tempmax", "snli", "accuracy")].mean == pytest.approx(83.0)
    assert any(line.startswith("| tempmax | 83.00 ± 2.83 | 2 |") for line in to_markdown(table).splitlines())


def test_bad_descriptions_say_what_to_fix(toy):
    Mapping, Parameter, positive = attention.Mapping, attention.Parameter, attention.registry.positive
    tempmax, omega = toy["tempmax"], toy["tempmax_omega"]
    with pytest.raises(ValueError, match="'tempmax' is already registered; attention.unregister"):
        attention.register(Mapping("tempmax", tempmax, omega=omega))
    with pytest.raises(ValueError, match="'softmax' is already registered"):
        attention.register(Mapping("softmax", tempmax))
    with pytest.raises(ValueError, match="none of them gamma"):
        Mapping("hot", tempmax, (Parameter("gamma", 1.0),))
    with pytest.raises(TypeError, match="must take temperature as keyword arguments"):
        Mapping("hot", lambda scores, dim=-1, gamma=1.0, mask=None: scores, (Parameter("temperature", 1.0),))
    with pytest.raises(ValueError, match="hot: temperature must be > 0, got -1.0"):
        attention.register(Mapping("hot", tempmax, (Parameter("temperature", -1.0, positive),)))
    with pytest.raises(ValueError, match="groups must be one of"):
        Mapping("hot", tempmax, groups="runs")
    with pytest.raises(ValueError, match="name must be a Python identifier"):
        Mapping("hot-2", tempmax)
    def with_lam(scores, dim=-1, gamma=1.0, mask=None, lam=0.5):
        return tempmax(scores, dim=dim, gamma=gamma, mask=mask)

    squashed = Parameter("lam", 2.0, positive, learned=attention.registry.SOFTPLUS_ABOVE_FLOOR)
    with pytest.raises(ValueError, match=r"a learned lam is 1.01 \+ softplus\(raw_lam\) here but exp\(log_lam\) in "
                                         r"'fusedmax'; use that parameterization, or another name"):
        attention.register(Mapping("hot", with_lam, (squashed,)))
    assert "hot" not in attention.NAMES
    attention.register(Mapping("no_omega", tempmax, (Parameter("temperature", 2.0, positive),)))
    try:
        x = torch.randn(2, 3)
        torch.testing.assert_close(attention.build("no_omega")(x), tempmax(x))
        for call in (lambda: attention.max_omega(x, "no_omega"), lambda: attention.regularizer(x, "no_omega"),
                     lambda: attention.fenchel_young_loss(x, torch.tensor([0, 1]), "no_omega")):
            with pytest.raises(ValueError, match=r"registered without its regularizer Ω \(Mapping\(omega=...\)\)"):
                call()
    finally:
        attention.unregister("no_omega")
    with pytest.raises(ValueError, match="unknown attention mapping 'no_omega'"):
        attention.unregister("no_omega")
    with pytest.raises(TypeError, match="takes an attention.Mapping"):
        attention.register("tempmax")


def test_nothing_is_left_registered():
    assert attention.NAMES == BUILTIN and set(attention.DEFAULTS) == set(BUILTIN) == set(attention.MODULES)
    huggingface = sys.modules.get("attention.huggingface")
    assert huggingface is None or not any(name.startswith("tempmax") for name in huggingface.REGISTERED)
