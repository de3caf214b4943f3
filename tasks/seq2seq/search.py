"""Greedy and beam search for ``tasks.seq2seq.model.Seq2Seq``, batched over sentences, with attention matrices.

Both return, per source sentence, a ``Hypothesis``: the target ids (without <bos>/<eos>), the log-probability,
the attention matrix (target length × source length; rows of the emitted tokens, the <eos> step left out) and
the attention scores behind it (same shape; UNK replacement breaks ties inside a fused group with them). A model with
several attention rows per target step (a Transformer's heads: ``decode_step`` weights (B, rows, S)) gives matrices
of target length × rows × source length, and a model that keeps no scores (``None``) ``attention_scores=None``.
The length limit of each sentence is min(max_length, max_len_a · |src| + max_len_b); at the limit <eos> is forced.

Beam search keeps ``beam`` live hypotheses per sentence (from the 2·beam best continuations, as fairseq does);
a continuation ending in <eos> among the ``beam`` best is finished. Without a length penalty (OpenNMT-py's default),
a sentence stops as soon as its best finished score is at least its best live score — live scores only go down,
so the result is the exact best of what the beam can reach; with a length penalty it stops at ``beam`` finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float
    attention: torch.Tensor  # (len(tokens), src_len), or (len(tokens), rows, src_len) (several heads)
    attention_scores: torch.Tensor | None = None  # same shape: the scores the mapping was applied to


def _max_lengths(src_lengths: torch.Tensor, max_len_a: float, max_len_b: int, max_length: int) -> list[int]:
    return [max(1, min(max_length, int(max_len_a * int(n) + max_len_b))) for n in src_lengths.tolist()]


@torch.no_grad()
def greedy_search(model, src, src_lengths, bos: int, eos: int, max_len_a: float = 2.0, max_len_b: int = 10,
                  max_length: int = 100) -> list[Hypothesis]:
    B = src.size(0)
    limits = _max_lengths(src_lengths, max_len_a, max_len_b, max_length)
    enc = model.encode(src, src_lengths)
    state = model.init_state(enc)
    tokens = torch.full((B,), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool)
    steps, attns, raw, scores = [], [], [], torch.zeros(B, dtype=torch.float64)
    ended = [None] * B
    for t in range(max(limits)):
        out, state, weights, step_scores = model.decode_step(tokens, state, enc.memory, enc.mask)
        lp = model.log_probs(out)
        for b in range(B):  # force <eos> at the length limit
            if t == limits[b] - 1:
                keep = lp[b, eos].clone()
                lp[b].fill_(float("-inf"))
                lp[b, eos] = keep
        best, tokens = lp.max(dim=1)
        live = ~done
        scores[live] += best.double().cpu()[live]
        steps.append(tokens.cpu())
        attns.append(weights.cpu())
        if step_scores is not None:
            raw.append(step_scores.float().cpu())
        for b in torch.nonzero(live & (tokens.cpu() == eos)).flatten().tolist():
            ended[b] = t
        done |= tokens.cpu() == eos
        if bool(done.all()):
            break
    steps = torch.stack(steps, dim=1)
    attns = torch.stack(attns, dim=1)
    raw = torch.stack(raw, dim=1) if raw else None
    hyps = []
    for b in range(B):
        n = ended[b] if ended[b] is not None else steps.size(1)
        s = int(src_lengths[b])
        hyps.append(Hypothesis(steps[b, :n].tolist(), float(scores[b]), attns[b, :n, ..., :s].clone(),
                               None if raw is None else raw[b, :n, ..., :s].clone()))
    return hyps


@torch.no_grad()
def beam_search(model, src, src_lengths, bos: int, eos: int, beam: int = 5, max_len_a: float = 2.0,
                max_len_b: int = 10, max_length: int = 100, length_penalty: float = 0.0) -> list[Hypothesis]:
    B, K = src.size(0), beam
    device = src.device
    limits = _max_lengths(src_lengths, max_len_a, max_len_b, max_length)
    enc = model.encode(src, src_lengths)
    expand = torch.arange(B, device=device).repeat_interleave(K)
    memory, mask = enc.memory.index_select(0, expand), enc.mask.index_select(0, expand)
    state = model.init_state(enc).index_select(expand)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one
    tokens = torch.full((B * K,), bos, dtype=torch.long, device=device)
    history = torch.empty(B * K, 0, dtype=torch.long, device=device)
    attn_hist = score_hist = None  # (B * K, steps, [rows,] S), made at the first step (its shape is the model's)
    finished: list[list[tuple[float, float, list[int], torch.Tensor, torch.Tensor]]] = [[] for _ in range(B)]
    done = [False] * B
    base = (torch.arange(B, device=device) * K).unsqueeze(1)

    def normalized(score: float, length: int) -> float:
        return score / (max(length, 1) ** length_penalty) if length_penalty else score

    for t in range(max(limits)):
        out, state, weights, step_scores = model.decode_step(tokens, state, memory, mask)
        if attn_hist is None:
            attn_hist = weights.new_empty(B * K, 0, *weights.shape[1:])
            if step_scores is not None:
                score_hist = weights.new_empty(B * K, 0, *step_scores.shape[1:])
        lp = model.log_probs(out).float()  # (B*K, V)
        V = lp.size(1)
        for b in range(B):
            if t == limits[b] - 1:
                rows = slice(b * K, (b + 1) * K)
                keep = lp[rows, eos].clone()
                lp[rows] = float("-inf")
                lp[rows, eos] = keep
        cand = (scores.reshape(-1, 1) + lp).reshape(B, K * V)
        top_s, top_i = cand.topk(min(2 * K, K * V), dim=1)
        beam_idx, tok = top_i // V, top_i % V
        is_eos = tok == eos
        src_rows = base + beam_idx  # (B, 2K) rows of the previous step
        # finish the <eos> continuations among the K best
        eos_pos = torch.nonzero(is_eos[:, :K] & torch.isfinite(top_s[:, :K])).tolist()
        for b, j in eos_pos:
            if done[b]:
                continue
            row = int(src_rows[b, j])
            s = float(top_s[b, j])
            n = int(src_lengths[b])
            finished[b].append((normalized(s, t), s, history[row].tolist(), attn_hist[row, :, ..., :n],
                                None if score_hist is None else score_hist[row, :, ..., :n]))
        # the K best non-<eos> continuations stay alive (there are at least K among the 2K best)
        order = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :K]
        sel_rows = src_rows.gather(1, order).reshape(-1)
        sel_tok = tok.gather(1, order).reshape(-1)
        scores = top_s.gather(1, order)
        scores = torch.where(is_eos.gather(1, order), torch.full_like(scores, float("-inf")), scores)
        history = torch.cat([history.index_select(0, sel_rows), sel_tok.unsqueeze(1)], dim=1)
        attn_hist = torch.cat([attn_hist.index_select(0, sel_rows), weights.index_select(0, sel_rows).unsqueeze(1)],
                              dim=1)
        if score_hist is not None:
            score_hist = torch.cat([score_hist.index_select(0, sel_rows),
                                    step_scores.float().index_select(0, sel_rows).unsqueeze(1)], dim=1)
        state = state.index_select(sel_rows)
        tokens = sel_tok
        best_alive = scores.max(dim=1).values.tolist()
        for b in range(B):
            if done[b]:
                continue
            if t >= limits[b] - 1 or len(finished[b]) >= K:
                done[b] = True
            elif finished[b] and length_penalty == 0.0 and max(f[0] for f in finished[b]) >= best_alive[b]:
                done[b] = True
        if all(done):
            break
        # sentences already done keep decoding as dead rows; silence them
        for b in range(B):
            if done[b]:
                scores[b] = float("-inf")
    hyps = []
    for b in range(B):
        if finished[b]:
            _, raw, toks, att, sc = max(finished[b], key=lambda f: f[0])
        else:  # cannot happen (<eos> is forced at the limit) but keep a safe answer
            row, n = b * K, int(src_lengths[b])
            raw, toks = float(scores[b, 0]), history[row].tolist()
            att, sc = attn_hist[row, :, ..., :n], None if score_hist is None else score_hist[row, :, ..., :n]
        hyps.append(Hypothesis(toks, raw, att.detach().cpu().clone(),
                               None if sc is None else sc.detach().cpu().clone()))
    return hyps


def replace_unk(tokens: list[str], src_tokens: list[str], attention: torch.Tensor, unk: str = "<unk>",
                scores: torch.Tensor | None = None) -> list[str]:
    """Replace each ``unk`` in the output by the source token with the largest attention weight at that step.

    fusedmax and oscarmax give several source positions exactly the same weight by design (a fused group), so
    "the largest weight" is often a tie. A tie is broken by the attention *score* the mapping was applied to
    (the position the model preferred before fusing; ``scores``, same shape as ``attention``), and by the
    leftmost position only when the scores tie too (or are not given)."""
    out = list(tokens)
    if attention.dim() == 3:  # several heads (a Transformer): their mean row, whose argmax is where most heads look
        attention, scores = attention.mean(1), None
    for i, tok in enumerate(out):
        if tok == unk and i < attention.size(0) and len(src_tokens) > 0:
            out[i] = src_tokens[attended_position(attention[i, : len(src_tokens)],
                                                  None if scores is None else scores[i, : len(src_tokens)])]
    return out


def attended_position(weights: torch.Tensor, scores: torch.Tensor | None = None) -> int:
    """The argmax of one attention row; ties (exactly equal weights, as in a fused group) go to the highest score."""
    top = weights.max()
    tied = weights == top
    if scores is None or int(tied.sum()) == 1:
        return int(tied.nonzero()[0])
    masked = torch.where(tied, scores.to(torch.float64), torch.tensor(float("-inf"), dtype=torch.float64))
    return int(masked.argmax())
