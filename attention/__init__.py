"""Sparse and structured attention: the regularized framework of Niculae & Blondel (NeurIPS 2017).

    Π_Ω(x) = argmax_{y ∈ Δ} <y, x> - γ Ω(y)

with Ω the negative entropy (softmax), ½‖y‖² (sparsemax), ½‖y‖² + λ TV(y) (fusedmax),
½‖y‖² + λ Σ_{i<j} max(|y_i|, |y_j|) (oscarmax), ½‖y‖_p² (sq_pnorm_max) or the Tsallis α-entropy (entmax).
Exact forward, closed-form backward (learnable γ, λ and entmax's α included; exact double backward), any dim,
masks, CPU and CUDA; the kernels are torch operators (``torch.ops.attention.*``), so torch.compile and torch.export
work.

    import torch, attention
    attention.fusedmax(torch.tensor([1.0, 1.1, 0.2, -1.0]), lam=0.2)   # tensor([0.5, 0.5, 0.0, 0.0])
    attn = attention.build("oscarmax", lam=0.05)    # an nn.Module: attn(scores, mask=None)
    out = attention.scaled_dot_product_attention(q, k, v, is_causal=True, mapping="sparsemax")
    loss = attention.fenchel_young_loss(logits, labels, "sparsemax")   # the mapping's own loss
    attention.groups(weights, "segments")   # each weight's fused segment (or cluster), one definition for all uses

Each mapping is described once (``attention.Mapping``) and registered (``attention.register``); every name below
that lists mappings (``MAPPINGS``, ``DEFAULTS``, ``MODULES``, ``NAMES``) is read from that one registry. See
attention/README.md, "Adding a mapping".
"""

from importlib import metadata as _metadata

from torch import nn as _nn

from . import mappings as _builtin  # registers the library's own mappings
from . import registry
from ._layout import set_checks
from .defaults import DEFAULTS
from .framework import max_omega, regularizer
from .functions import entmax, fusedmax, oscarmax, softmax, sparsemax, sq_pnorm_max
from .losses import FenchelYoungLoss, fenchel_young_loss
from .modules import MODULES
from .registry import MAPPINGS, Learned, Mapping, Parameter, register, unknown_name, unregister
from .sdpa import MultiheadAttention, scaled_dot_product_attention
from .structure import groups, groups_kind, num_groups

Softmax, Sparsemax, Fusedmax, Oscarmax, SqPnormMax, Entmax = (MODULES[m.name] for m in _builtin.BUILTIN)

try:
    __version__ = _metadata.version("structured-attention")
except _metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.1.0"  # pyproject.toml's version (a test keeps them equal)


def __getattr__(name: str):
    if name == "NAMES":  # read at each use: a mapping registered later is in it
        return registry.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(name: str, **params) -> _nn.Module:
    """The mapping ``name`` as an ``nn.Module``: ``build("fusedmax", lam=0.2)``; parameters not given take their
    defaults, ``DEFAULTS[name]``."""
    module = MODULES[registry.lookup(name).name]
    try:
        return module(**params)
    except TypeError as error:
        raise TypeError(f"attention.build({name!r}): {error}") from None


__all__ = [
    "softmax", "sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax",
    "Softmax", "Sparsemax", "Fusedmax", "Oscarmax", "SqPnormMax", "Entmax",
    "scaled_dot_product_attention", "MultiheadAttention",
    "max_omega", "regularizer", "build", "set_checks", "NAMES", "MAPPINGS",
    "fenchel_young_loss", "FenchelYoungLoss",
    "groups", "num_groups", "groups_kind", "DEFAULTS", "MODULES",
    "Mapping", "Parameter", "Learned", "register", "unregister", "registry", "unknown_name",
]
