"""The attention mapping of a run, built from its config node (``configs/attention/<name>.yaml``):

    build_attention({"_target_": "attention.build", "name": "fusedmax", "gamma": 1.0, "lam": 0.1})

The one constructor of the tasks (SNLI and seq2seq). A node with ``_target_`` is instantiated by Hydra (the
shipped configs name ``attention.build``; another constructor can be named there); a node without one holds
``attention.build``'s arguments; an ``nn.Module`` is used as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

import attention


def build_attention(spec: Mapping | torch.nn.Module) -> torch.nn.Module:
    """The attention ``nn.Module`` of the config node ``spec`` ({_target_: attention.build, name, ...params})."""
    if isinstance(spec, torch.nn.Module):
        return spec
    spec = dict(spec)
    if "_target_" in spec:
        import hydra

        return hydra.utils.instantiate(spec)
    return attention.build(**spec)
