"""``nn.Module`` forms of the mappings, for models and for Hydra's ``_target_``: one class per registered
``attention.Mapping``, made from its description (``module_class``); ``MODULES`` is {name: class}, a view of the
registry.

A parameter given as a tensor is kept as it is: an ``nn.Parameter`` (say one γ per head, shape (heads, 1, 1))
is registered and learned with the model; its gradient is exact (see ``attention.functions``).
"""

import inspect
import typing
from collections.abc import Iterator
from collections.abc import Mapping as _ReadOnlyTable

import torch
from torch import nn

from .defaults import GAMMA
from .registry import GAMMA_PARAMETER, REGISTRY, Mapping


class MappingModule(nn.Module):
    """Π of ``mapping`` along ``dim``: ``forward(scores, mask=None)``. Its subclasses' ``__init__`` take ``dim``,
    ``gamma`` and the mapping's parameters, with their defaults."""

    mapping: Mapping
    name = ""

    def __init__(self, *args, **kwargs):
        super().__init__()
        bound = inspect.signature(type(self).__init__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        del values["self"]
        self.dim = values.pop("dim")
        self.gamma = GAMMA_PARAMETER.check(self.name, "gamma", values.pop("gamma"))
        for key, value in self.mapping.check(values).items():
            setattr(self, key, value)  # an nn.Parameter is registered by the assignment

    def params(self) -> dict:
        return {p.name: getattr(self, p.name) for p in self.mapping.parameters}

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={_show(v)}" for k, v in self.params().items())
        return f"dim={self.dim}, gamma={_show(self.gamma)}{extra}"

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mapping.function(scores, dim=self.dim, gamma=self.gamma, mask=mask, **self.params())


def _show(value):
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    return value


def module_class(mapping: Mapping) -> type:
    """The ``nn.Module`` class of ``mapping``, named after it (sq_pnorm_max: ``SqPnormMax``), whose ``__init__``
    signature shows the parameters and their defaults (for help(), IDEs and Hydra)."""
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    hints = typing.get_type_hints(mapping.function)  # the functional form's, where it gives them
    annotations = {"dim": int, "gamma": float | torch.Tensor,
                   **{p.name: hints.get(p.name, type(p.default)) for p in mapping.parameters}}
    defaults = {"dim": -1, "gamma": GAMMA, **{p.name: p.default for p in mapping.parameters}}

    def __init__(self, *args, **kwargs):
        MappingModule.__init__(self, *args, **kwargs)

    __init__.__signature__ = inspect.Signature([inspect.Parameter("self", keyword)] + [
        inspect.Parameter(name, keyword, default=defaults[name], annotation=annotations[name]) for name in defaults])
    __init__.__annotations__ = annotations
    class_name = mapping.name.title().replace("_", "")
    __init__.__qualname__ = f"{class_name}.__init__"
    doc = mapping.doc or (mapping.function.__doc__ or "").strip().split("\n")[0]
    return type(class_name, (MappingModule,), {"mapping": mapping, "name": mapping.name, "__init__": __init__,
                                               "__doc__": f"``attention.{mapping.name}`` as a module: {doc}",
                                               "__module__": __name__})


class _Modules(_ReadOnlyTable):
    """{name: ``nn.Module`` class} of every registered mapping, read from the registry at each use; a class is made
    once per description."""

    def __init__(self):
        self._made: dict[str, tuple[Mapping, type]] = {}

    def __getitem__(self, name: str) -> type:
        mapping = REGISTRY[name]
        made = self._made.get(name)
        if made is None or made[0] is not mapping:  # (a name registered again gets its own class)
            made = self._made[name] = (mapping, module_class(mapping))
        return made[1]

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


MODULES = _Modules()


def __getattr__(name: str) -> type:
    """The class of a registered mapping by its class name (``attention.modules.Fusedmax``), which is also how
    pickle finds it."""
    for module in MODULES.values():
        if module.__name__ == name:
            return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
