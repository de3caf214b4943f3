"""Attention layers for Transformers: ``scaled_dot_product_attention`` and ``MultiheadAttention``, with any mapping
of the library in place of softmax.

``scaled_dot_product_attention`` has the signature and semantics of ``torch.nn.functional.
scaled_dot_product_attention`` (shapes (..., L, E), a bool ``attn_mask`` where True takes part in attention, a
float one added to the scores, ``is_causal``, ``scale``, ``dropout_p``, ``enable_gqa``), plus ``mapping`` and
its parameters; ``mapping="softmax"`` gives torch's result. ``MultiheadAttention`` has the interface and the mask
conventions of ``torch.nn.MultiheadAttention`` (bool masks: True = *not* allowed), so it can replace the
``self_attn`` of ``nn.TransformerEncoderLayer``:

    layer = nn.TransformerEncoderLayer(64, 4, batch_first=True)
    layer.self_attn = attention.MultiheadAttention(64, 4, batch_first=True, mapping="fusedmax", lam=0.1)

Masked keys get exactly 0 weight; a query that may attend to no key gets a zero output (torch gives nan).
A float mask's entries at or below ``torch.finfo(dtype).min / 2`` (-inf, and the ``finfo.min`` that Hugging Face,
fairseq and much user code write) are masked exactly like a bool False; its other entries are added to the scores.
``dtype`` is the narrower of the mask's and the query's floating types.
"""

import math
from collections.abc import Callable

import torch
from torch import nn

from . import _layout
from .registry import ALPHA_FLOOR, Mapping, learnable_by, lookup  # noqa: F401 (ALPHA_FLOOR: its old home)


def _apply_mapping(scores, mask, mapping, params):
    if callable(mapping) and not isinstance(mapping, Mapping):
        return mapping(scores, mask=mask, **params)
    return lookup(mapping).function(scores, dim=-1, mask=mask, **params)


def split_float_mask(attn_mask, dtype):
    """A float mask as (allowed, additive part), for scores of ``dtype``.

    Entries at or below ``finfo.min / 2`` are masked, as a bool False: added to the scores they would not be
    "minus infinity" to a sparse mapping (fusedmax's TV chain would still run through those keys, and dividing by
    γ < 1 overflows to inf). ``finfo`` is that of the narrower of the mask's and the scores' types, so a mask
    written with the model's ``finfo(float16).min`` also counts in float32. nan stays unmasked (and is reported).
    """
    if not attn_mask.is_floating_point():  # (torch refuses them too; read as additive, a 0/1 mask would mask nothing)
        raise TypeError(f"attn_mask must be bool (True takes part in attention) or floating (added to the scores), "
                        f"not {attn_mask.dtype}: for a 0/1 integer mask pass attn_mask.bool()")
    threshold = max(torch.finfo(attn_mask.dtype).min, torch.finfo(dtype).min) / 2
    allowed = ~(attn_mask <= threshold)
    return allowed, torch.where(allowed, attn_mask, 0)


def attend(query, key, value, allowed=None, additive=None, dropout_p=0.0, scale=None, enable_gqa=False,
           mapping="fusedmax", **params):
    """(output, weights): weights = mapping(q kᵀ · scale + additive, mask=allowed) over the keys, output =
    weights @ value. ``allowed``: bool, True = may attend, broadcastable to (..., L, S)."""
    if allowed is not None and _masks_nothing(allowed):
        allowed = None  # (BERT's padding mask of an unpadded batch): the mappings' unmasked path is the fast one
    if enable_gqa and query.dim() >= 3 and key.size(-3) != query.size(-3):
        groups = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(groups, dim=-3)
        value = value.repeat_interleave(groups, dim=-3)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale
    if additive is not None:
        scores = scores + additive.to(scores.dtype)
    weights = _apply_mapping(scores, allowed, mapping, params)
    if dropout_p > 0.0:
        weights = torch.dropout(weights, dropout_p, train=True)
    return weights @ value, weights


def _masks_nothing(allowed: torch.Tensor) -> bool:
    """Whether a bool mask allows every key, read where that costs no device sync (on the CPU, outside a compiled
    graph, which cannot branch on values); elsewhere the mask is simply applied."""
    if not _layout.on_host(allowed.device) or torch.compiler.is_compiling():
        return False
    return _layout.all_true(allowed)


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
                                 *, mapping: str | Mapping | Callable = "fusedmax", **params) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with the attention ``mapping`` (a name of
    ``attention.MAPPINGS``, a registered ``attention.Mapping`` or a callable ``f(scores, mask=...)``) in place of
    softmax; ``params`` go to the
    mapping (``gamma``, ``lam``, ``p``, ``alpha``; tensors broadcasting to (..., L, 1) are per head/query and
    learnable).

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev).
    """
    L, S = query.size(-2), key.size(-2)
    allowed, additive = None, None
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal=True, not both (as torch)")
        allowed = torch.ones(L, S, dtype=torch.bool, device=query.device).tril(diagonal=0)
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            allowed = attn_mask
        else:
            allowed, additive = split_float_mask(attn_mask, query.dtype)
    out, _ = attend(query, key, value, allowed, additive, dropout_p, scale, enable_gqa, mapping, **params)
    return out


class MultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` with an attention mapping of this library in place of softmax.

    Same constructor arguments (``embed_dim, num_heads, dropout, bias, kdim, vdim, batch_first``), same ``forward``
    (``query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal``) and mask
    conventions (bool: True = not allowed; float: added), so it replaces ``self_attn`` in
    ``nn.TransformerEncoderLayer`` / ``DecoderLayer``. ``mapping``: a name of ``attention.MAPPINGS``, a registered
    ``attention.Mapping``, or a callable ``f(scores, mask=..., **params)`` over the last dim (its parameters are
    not learned here); ``params``: its parameters. ``learn_gamma`` / ``learn_lam`` / ``learn_alpha``, or ``learn``
    (names of any learnable parameters of the mapping): one value per head, learned in the parameterization its
    ``attention.Parameter`` gives, starting from the given value (or the default): γ and λ as exp(log γ), so they
    stay > 0; entmax's α as 1.01 + softplus(raw_alpha), > 1 whatever the optimizer does (the floor of Correia et
    al.'s adaptively sparse Transformers: closer to 1, entmax is softmax in all but name and 1/(α-1) blows up).

    Separate q/k/v projections (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``); ``in_proj_weight`` is None,
    which also keeps torch's Transformer layers off their fused fast path (that path would bypass this module).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 mapping: str | Mapping | Callable = "fusedmax", learn_gamma: bool = False, learn_lam: bool = False,
                 learn_alpha: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, learn: tuple[str, ...] = (), **params) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        description = None
        if isinstance(mapping, Mapping) or not callable(mapping):
            description = lookup(mapping)
            mapping = description.name
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first, self.mapping = dropout, batch_first, mapping
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self._qkv_same_embed_dim = False
        self.in_proj_weight = None
        self.in_proj_bias = None
        # a check of the parameters now, not at the first forward
        if description is not None:
            description.check(params)
        _apply_mapping(torch.zeros(1, 2), None, mapping, params)
        self.params = dict(params)
        wanted = [key for key, on in (("gamma", learn_gamma), ("lam", learn_lam), ("alpha", learn_alpha)) if on]
        learnable = {} if description is None else description.learnable()
        for key in [*wanted, *learn]:
            if key not in learnable:
                able = " or ".join(learnable_by(key)) or "a registered mapping with a learnable " + key
                raise ValueError(f"MultiheadAttention: learn_{key} needs mapping {able}, not {_name(mapping)}")
        self._learned = {key: learned for key, learned in learnable.items() if key in wanted or key in learn}
        starts = {key: self.params.pop(key) for key in self._learned if key in self.params}
        if self._learned:
            made = description.per_head_parameters(self._learned, starts, num_heads, "MultiheadAttention", **factory)
            for raw_name, parameter in made.items():
                self.register_parameter(raw_name, parameter)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, mapping={_name(self.mapping)}, "
                f"params={self.params}, learned={list(self._learned)}, batch_first={self.batch_first}")

    def mapping_params(self) -> dict:
        params = dict(self.params)
        for key, learned in self._learned.items():
            params[key] = learned.to_value(getattr(self, learned.prefix + key))
        return params

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        # (L, N, E) from here on
        L, N, _ = query.shape
        S = key.shape[0]
        H, D = self.num_heads, self.head_dim

        def heads(x, length):
            return x.reshape(length, N, H, D).permute(1, 2, 0, 3)  # (N, H, length, D)

        q, k, v = heads(self.q_proj(query), L), heads(self.k_proj(key), S), heads(self.v_proj(value), S)

        allowed, additive = None, None
        if attn_mask is None and is_causal:
            allowed = torch.ones(L, S, dtype=torch.bool, device=query.device).tril(diagonal=0)
        elif attn_mask is not None:
            if attn_mask.dim() == 3:  # (N * H, L, S)
                attn_mask = attn_mask.reshape(N, H, L, S)
            allowed, additive = self._canonical(attn_mask, query.dtype)
        if key_padding_mask is not None:
            pad_allowed, pad_additive = self._canonical(key_padding_mask.reshape(N, 1, 1, S), query.dtype)
            allowed = pad_allowed if allowed is None else allowed & pad_allowed
            if pad_additive is not None:
                additive = pad_additive if additive is None else additive + pad_additive
        out, weights = attend(q, k, v, allowed, additive, self.dropout if self.training else 0.0, None, False,
                              self.mapping, **self.mapping_params())
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(L, N, self.embed_dim))
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            weights = weights.squeeze(0)
        return out, weights

    @staticmethod
    def _canonical(mask, dtype):
        """nn.MultiheadAttention's conventions -> (allowed bool, additive float or None)."""
        if mask.dtype == torch.bool:
            return ~mask, None
        return split_float_mask(mask, dtype)


def _name(mapping) -> str:
    return mapping if isinstance(mapping, str) else getattr(mapping, "__name__", repr(mapping))
