"""The Transformer of the seq2seq tasks (tasks/seq2seq/transformer.py): the key/value cache decodes what teacher
forcing scores, each attention kind runs its own mapping with its parameters learned per head, the rows that pass
no gradient are read off the weights correctly, and the harness trains, resumes and records it unchanged."""

import json
from pathlib import Path

import pytest
import torch
from test_harness_trainer import Killed, dies_before_step
from test_seq2seq_task import one_thread  # noqa: F401 (autouse: one torch/numba thread)

import attention
from tasks.checkpoints import load_checkpoint_file
from tasks.optim import scheduled_lr
from tasks.seq2seq.search import beam_search, greedy_search
from tasks.seq2seq.task import Multi30kTask
from tasks.seq2seq.transformer import TransformerSeq2Seq
from tasks.stats import zero_gradient_rows
from tasks.trainer import Trainer

DATA = Path(__file__).parent / "data"
TINY = {"kind": "transformer", "d_model": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 2, "ffn_size": 32}
TRAINER = {"epochs": 2, "progress": False, "patience": 0, "checkpoint_every_steps": 3, "log_every_steps": 1,
           "optimizer": {"name": "adam", "lr": 3e-3}, "lr_schedule": {"warmup_steps": 4, "decay": "inverse_sqrt"}}
SPECS = {"softmax": {"name": "softmax"}, "sparsemax": {"name": "sparsemax"},
         "fusedmax": {"name": "fusedmax", "lam": 0.1}, "oscarmax": {"name": "oscarmax", "lam": 0.05},
         "entmax": {"name": "entmax", "alpha": 1.5}}


def model(name="fusedmax", **options):
    torch.manual_seed(0)
    kw = {k: v for k, v in TINY.items() if k != "kind"}
    return TransformerSeq2Seq(40, 30, SPECS[name], **{**kw, "init_std": 0.3, **options}).eval()


def batch():
    torch.manual_seed(1)
    src = torch.randint(4, 40, (3, 7))
    lengths = torch.tensor([7, 5, 2])
    src[1, 5:], src[2, 2:] = 0, 0
    tgt = torch.randint(4, 30, (3, 6))
    tgt[:, 0] = 2
    return src, lengths, tgt


@pytest.mark.parametrize("name", ["softmax", "fusedmax", "entmax"])
def test_the_cache_decodes_what_teacher_forcing_scores(name):
    m = model(name)
    src, lengths, tgt = batch()
    with torch.no_grad():
        forced, cross = m(src, lengths, tgt)
        assert cross is None  # weights are kept only when asked (return_scores or capture)
        _, cross, scores = m(src, lengths, tgt, return_scores=True)
        enc = m.encode(src, lengths)
        state = m.init_state(enc)
        for t in range(tgt.size(1)):
            out, state, weights, step_scores = m.decode_step(tgt[:, t], state, enc.memory, enc.mask)
            torch.testing.assert_close(m.log_probs(out), forced[:, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(weights, cross[:, t], atol=1e-6, rtol=1e-5)
    assert scores is None and step_scores is None
    assert cross.shape == (3, 6, 2 * 2, 7)  # (B, T, decoder layers * heads, S)
    assert float(cross[2, :, :, 2:].abs().max()) == 0.0  # padding gets exactly zero weight
    torch.testing.assert_close(cross.sum(-1), torch.ones(3, 6, 4))


def test_beam_of_one_is_greedy_and_beams_reorder_the_cache():
    m = model("fusedmax")
    src, lengths, _ = batch()
    greedy = greedy_search(m, src, lengths, bos=2, eos=3, max_length=9)
    beam1 = beam_search(m, src, lengths, bos=2, eos=3, beam=1, max_length=9)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam1]
    beam4 = beam_search(m, src, lengths, bos=2, eos=3, beam=4, max_length=9)
    for i, (h, n) in enumerate(zip(beam4, lengths.tolist())):
        assert h.attention.shape == (len(h.tokens), 4, n) and h.attention_scores is None
        # the beam's score is what the model gives its tokens when teacher-forced (a wrongly reordered cache
        # would score other prefixes)
        tgt = torch.tensor([[2] + h.tokens + [3]])
        with torch.no_grad():
            lp, _ = m(src[i:i + 1, :n], torch.tensor([n]), tgt[:, :-1])
        forced = float(lp[0].gather(1, tgt[:, 1:].T).sum())
        assert forced == pytest.approx(h.score, abs=1e-4)


def test_each_kind_runs_its_mapping_and_learns_its_parameters_per_head():
    m = model("fusedmax", mappings={"encoder": "softmax", "decoder": "softmax"}, learn=["gamma", "lam"])
    assert {k: v[0] for k, v in m.kinds.items()} == {"encoder": "softmax", "decoder": "softmax", "cross": "fusedmax"}
    names = {n for n, _ in m.named_parameters() if ".log_" in n}
    assert "hf.model.decoder.layers.1.encoder_attn.log_lam" in names
    assert "hf.model.encoder.layers.0.self_attn.log_gamma" in names
    assert not any("self_attn.log_lam" in n for n in names)  # softmax has no λ
    assert m.learned == {"encoder": ("gamma",), "decoder": ("gamma",), "cross": ("gamma", "lam")}
    values = m.learned_values()
    assert values["cross"]["lam"] == [[0.1, 0.1], [0.1, 0.1]] and values["encoder"]["gamma"] == [[1.0, 1.0]]
    # the structured cross-attention is sparse, the softmax self-attention is not
    src, lengths, tgt = batch()
    m.capture()
    with torch.no_grad():
        m(src, lengths, tgt)
    assert float((m.captured("encoder")[0] == 0).float().mean()) == 0.0
    assert float((m.captured("cross") == 0).float().mean()) > 0.2
    m.capture(False)
    # every learned parameter gets a gradient
    m.train()
    lp, _ = m(src, lengths, tgt)
    lp.sum().backward()
    for name, p in m.named_parameters():
        if ".log_" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_adaptive_entmax_learns_alpha_per_head():
    m = model("entmax", learn=["gamma", "alpha"])
    assert m.learned["cross"] == ("gamma", "alpha")
    assert m.learned_values()["decoder"]["alpha"] == [[1.5, 1.5], [1.5, 1.5]]
    src, lengths, tgt = batch()
    m.train()
    m(src, lengths, tgt)[0].sum().backward()
    grad = m.hf.model.decoder.layers[0].encoder_attn.raw_alpha.grad
    assert grad is not None and grad.shape == (2, 1, 1) and grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_rows_without_gradient_read_off_the_weights_match_the_measured_jacobian(name, scale):
    """``TransformerSeq2Seq.dead_rows`` (from the weights alone) against ``zero_gradient_rows`` (a vector-Jacobian
    product through the mapping itself), on rows from nearly uniform to one-hot."""
    m = model(name)
    torch.manual_seed(2)
    scores = torch.randn(400, 9, dtype=torch.float64) * scale
    scores[:50, :3] = 1.0  # exact ties: fused or clustered groups
    module = attention.build(**SPECS[name])
    weights = module(scores)
    measured = zero_gradient_rows(module, scores, generator=torch.Generator().manual_seed(0))
    read = m.dead_rows(weights, "cross")
    if name == "softmax":  # never exactly dead: compare away from the numerical borderline of the 1e-5 rule
        clear = ((1 - weights.amax(-1) < 1e-7) | (1 - weights.amax(-1) > 1e-3))
        read, measured = read[clear], measured[clear]
        assert len(read) > 250
    assert torch.equal(read, measured), f"{int((read != measured).sum())} rows differ"


def test_bad_options_name_what_to_fix():
    with pytest.raises(ValueError, match="mappings.*unknown attention kind"):
        model(mappings={"self": "softmax"})
    with pytest.raises(ValueError, match="mappings.cross='nope'"):
        model(mappings={"cross": "nope"})
    with pytest.raises(ValueError, match="task.model.learn: unknown"):
        model(learn=["temperature"])
    with pytest.raises(ValueError, match="d_model=16 is not divisible by heads=3"):
        model(heads=3)
    with pytest.raises(ValueError, match="task.model.kind='cnn'"):
        Multi30kTask(name="multi30k", data={"root": str(DATA / "multi30k")}, attention=SPECS["softmax"],
                     model={"kind": "cnn"})


def task(tmp_path, name="fusedmax", **model_options):
    # init_std 0.5: at 0.02 the tiny model's fusedmax rows are one fused group and no gradient reaches λ
    model = {**TINY, "init_std": 0.5, **model_options}
    return Multi30kTask(name="multi30k", data={"root": str(DATA / "multi30k"), "src_lang": "de", "tgt_lang": "en"},
                        attention=SPECS[name], model=model, vocab={"min_freq": 1}, metric="neg_ppl",
                        train={"batch_size": 16, "normalization": "tokens"}, decode={"beam": 2, "replace_unk": True},
                        eval={"save_attention": 2, "valid_decode": "none"}, data_dir=str(tmp_path / "data"))


def last_weights(run_dir):
    return load_checkpoint_file(Path(run_dir) / "checkpoints" / "last.pt")["model"]


def test_trains_resumes_and_records_through_the_harness(tmp_path):
    full = Trainer(task(tmp_path), TRAINER, tmp_path / "full", seed=1).fit()

    with pytest.raises(Killed):  # steps 1 to 7 done, the last checkpoint at step 6
        Trainer(dies_before_step(task(tmp_path), 8), TRAINER, tmp_path / "killed", seed=1).fit()
    resumed = Trainer(task(tmp_path), TRAINER, tmp_path / "killed", seed=1).fit()
    assert resumed["resumed_from"]["step"] == 6
    a, b = last_weights(tmp_path / "full"), last_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and any(".log_lam" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    untimed = [{k: v for k, v in run["test"].items() if k != "decode_seconds"} for run in (resumed, full)]
    assert untimed[0] == untimed[1] and full["test"]["decode_sentences"] == 12

    test = full["test"]
    assert {"bleu", "ppl", "support", "dead_rows", "heads", "learned"} <= set(test)
    heads = test["heads"]
    assert [len(heads[k]) for k in ("encoder", "decoder", "cross")] == [1, 2, 2]
    assert all(len(layer) == 2 and {"support", "groups", "dead_rows"} <= set(layer[0])
               for kind in heads.values() for layer in kind)
    assert heads["decoder"][0][0]["support"] <= 10  # causal rows: at most the target so far
    assert full["history"][0]["valid"]["learned"]["cross"]["lam"] != full["history"][1]["valid"]["learned"]["cross"][
        "lam"]  # λ moved between the epochs: its trajectory is in the record's history
    saved = torch.load(tmp_path / "full" / "attention_test.pt", weights_only=True)
    item = saved["items"][0]
    assert item["attention"].shape == (len(item["hyp"]), 2 * 2, len(item["src"]))
    json.dumps(full["test"]["heads"])  # plain numbers: the record is JSON


def test_the_learning_rate_schedule():
    schedule = {"warmup_steps": 4, "decay": "inverse_sqrt"}
    assert [scheduled_lr(1.0, s, schedule) for s in (1, 2, 4, 16)] == [0.25, 0.5, 1.0, 0.5]
    assert scheduled_lr(1.0, 9, {"warmup_steps": 4, "decay": "none"}) == 1.0
    assert scheduled_lr(0.3, 9, None) == 0.3


def test_hydra_composes_the_transformer_and_keeps_the_rnn_configs(tmp_path):
    from hydra import compose, initialize_config_dir

    configs = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(configs, version_base=None):
        rnn = compose("train", ["task=multi30k"])
        assert rnn.task.model.rnn_size == 500 and "kind" not in rnn.task.model
        transformer = compose("train", ["task=gigaword", "task/model=transformer"])
        assert transformer.task.model.kind == "transformer" and "rnn_size" not in transformer.task.model
        preset = compose("train", ["experiment=multi30k_transformer_cpu", "attention=oscarmax"])
        assert preset.task.model.d_model == 128 and preset.trainer.lr_schedule.decay == "inverse_sqrt"
        assert "rnn_size" not in preset.task.model
