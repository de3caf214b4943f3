r"""One description per mapping (``Mapping``) and the one registry that every part of the library reads.

A mapping Π_Ω(x) = argmax_{y ∈ Δ} <y, x> - γ Ω(y) is described once: its name, its parameters (default, check,
how a learned one stays in range), its functional form, its regularizer Ω and the kind of group its weights form.
``register`` adds it; from then on ``attention.MAPPINGS``, ``DEFAULTS``, ``MODULES``, ``NAMES``, ``build``,
``max_omega``, ``regularizer``, the Fenchel–Young losses, ``scaled_dot_product_attention``,
``MultiheadAttention`` (learned parameters included), the Hugging Face adapter, ``groups_kind`` and the harness's
``${attention_default:name,key}`` resolver know it. ``unregister`` takes it out again. See attention/README.md,
"Adding a mapping".

γ is every mapping's: the framework divides the scores by it, so it is not listed among the parameters.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import _layout
from ._layout import check_parameter
from .defaults import DEFAULTS, GAMMA

ALPHA_FLOOR = 1.01  # a learned entmax α is ALPHA_FLOOR + softplus(raw_alpha)
GROUP_KINDS = ("segments", "clusters")


@dataclass(frozen=True)
class Learned:
    """How a learned parameter stays in range whatever the optimizer does: value = ``to_value(raw)``, raw being an
    ``nn.Parameter`` called ``prefix + name``; a learned parameter starts above ``floor``."""

    prefix: str
    to_value: Callable[[torch.Tensor], torch.Tensor]
    to_raw: Callable[[float], float]
    floor: float
    formula: str  # "{raw}" stands for the raw parameter's name: "exp({raw})"

    def describe(self, name: str) -> str:
        return self.formula.format(raw=self.prefix + name)

    def start(self, name: str, value, where: str) -> float:
        """The raw starting value for a learned ``name`` that starts at ``value``."""
        value = float(value)
        if not value > self.floor:
            raise ValueError(f"{where}: a learned {name} starts > {self.floor:g} (it is {self.describe(name)}), "
                             f"got {value}")
        return self.to_raw(value)


# γ and λ: positive, learned through their logarithm
EXP = Learned("log_", torch.exp, math.log, 0.0, "exp({raw})")
# entmax's α: the floor of Correia et al.'s adaptively sparse Transformers (closer to 1, entmax is softmax in all
# but name and 1/(α-1) blows up)
def _above_floor(raw):
    return ALPHA_FLOOR + torch.nn.functional.softplus(raw)


def _raw_above_floor(start):
    return math.log(math.expm1(start - ALPHA_FLOOR))


SOFTPLUS_ABOVE_FLOOR = Learned("raw_", _above_floor, _raw_above_floor, ALPHA_FLOOR,
                               f"{ALPHA_FLOOR} + softplus({{raw}})")


def positive(mapping: str, name: str, value):
    return check_parameter(name, mapping, value, positive=True)


def nonnegative(mapping: str, name: str, value):
    return check_parameter(name, mapping, value, positive=False)


def in_interval(low: float, high: float):
    """A check for a number in (low, high]."""
    def check(mapping: str, name: str, value):
        return check_parameter(name, mapping, value, positive=True, low=low, high=high)
    return check


def one_of(*choices):
    def check(mapping: str, name: str, value):
        if value not in choices:
            raise ValueError(f"{mapping}: {name} must be one of {list(choices)}, got {value!r}")
        return value
    return check


@dataclass(frozen=True)
class Parameter:
    """A parameter of a mapping besides γ. ``check(mapping, name, value)`` returns the value or raises an error that
    names both. ``learned``: how ``MultiheadAttention`` and the Hugging Face adapter learn it per head (None: not
    learnable). ``in_omega=False``: it picks how Π is computed, Ω does not depend on it (oscarmax's variant).
    ``argmax``: the values for which Π is the argmax of <y, x> - γΩ(y) (None: all); ``max_omega`` and the
    Fenchel–Young losses refuse the others. ``in_max_omega=False``: ``max_omega`` takes it as a number only (its
    gradient in that parameter is not implemented there)."""

    name: str
    default: object
    check: Callable = positive
    learned: Learned | None = None
    in_omega: bool = True
    argmax: tuple | None = None
    in_max_omega: bool = True


GAMMA_PARAMETER = Parameter("gamma", GAMMA, positive, learned=EXP, in_omega=False)


@dataclass(frozen=True)
class Mapping:
    """One attention mapping, described once.

    ``function(scores, dim=-1, gamma=1.0, mask=None, **parameters)``: Π_Ω along ``dim`` (an autograd Function
    with an explicit backward inside, or plain torch). ``omega(y, lengths, **parameters)``: Ω of each row of ``y``
    ((rows, d), ``lengths[r]`` valid entries in front, the others 0; the Ω parameters as numbers or one per row),
    None if the mapping has none (then ``max_omega``, ``regularizer`` and the losses refuse it). ``groups``: the
    kind of group ``attention.groups`` and the statistics count in its weights ("segments": fused runs of
    consecutive equal weights; "clusters": equal weights anywhere)."""

    name: str
    function: Callable
    parameters: tuple[Parameter, ...] = ()
    omega: Callable | None = None
    groups: str = "segments"
    doc: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"attention.Mapping: name must be a Python identifier (it names a module class and a "
                             f"config file), got {self.name!r}")
        if not callable(self.function):
            raise TypeError(f"attention.Mapping({self.name!r}): function must be callable, got {self.function!r}")
        if self.groups not in GROUP_KINDS:
            raise ValueError(f"attention.Mapping({self.name!r}): groups must be one of {GROUP_KINDS}, got "
                             f"{self.groups!r}")
        names = [p.name for p in self.parameters]
        if "gamma" in names or len(set(names)) != len(names):
            raise ValueError(f"attention.Mapping({self.name!r}): parameters {names} must have distinct names, "
                             "none of them gamma (every mapping has γ)")
        accepted = inspect.signature(self.function).parameters
        missing = [n for n in ("dim", "gamma", "mask", *names) if n not in accepted]
        if missing and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            raise TypeError(f"attention.Mapping({self.name!r}): function {self.function.__name__} must take "
                            f"{', '.join(missing)} as keyword arguments")

    @property
    def defaults(self) -> dict:
        """{"gamma": ..., parameter: default, ...}: what ``attention.DEFAULTS[name]`` holds."""
        return {"gamma": GAMMA_PARAMETER.default, **{p.name: p.default for p in self.parameters}}

    def parameter(self, name: str) -> Parameter:
        for parameter in (GAMMA_PARAMETER, *self.parameters):
            if parameter.name == name:
                return parameter
        raise TypeError(f"{self.name}: unexpected parameter {name!r}; it takes {list(self.defaults)}")

    @property
    def omega_parameters(self) -> tuple[str, ...]:
        """The parameters Ω depends on (γ scales it; an algorithm choice does not change it)."""
        return tuple(p.name for p in self.parameters if p.in_omega)

    def learnable(self) -> dict[str, Learned]:
        """{parameter: its parameterization} for those that can be learned per head, γ first."""
        every = (GAMMA_PARAMETER, *self.parameters)
        return {p.name: p.learned for p in every if p.learned is not None}

    def per_head_parameters(self, keys, start: dict, heads: int, where: str, **factory) -> dict:
        """{raw name: ``nn.Parameter`` of shape (heads, 1, 1)} for the learnable parameters ``keys`` (the caller
        checked that they are), in the description's order, each starting at ``start.get(key, default)``."""
        made = {}
        for key, learned in self.learnable().items():
            if key in keys:
                raw = learned.start(key, start.get(key, self.defaults[key]), where)
                made[learned.prefix + key] = torch.nn.Parameter(torch.full((heads, 1, 1), raw, **factory))
        return made

    def check(self, params: dict) -> dict:
        """``params`` checked (unknown names refused), defaults not filled in."""
        return {k: self.parameter(k).check(self.name, k, v) for k, v in params.items()}

    def not_argmax(self, params: dict) -> str | None:
        """Why Π with ``params`` is not the argmax of <y, x> - γΩ(y) (None when it is)."""
        if self.omega is None:
            return f"{self.name} was registered without its regularizer Ω (Mapping(omega=...))"
        for p in self.parameters:
            value = params.get(p.name, p.default)
            if p.argmax is not None and value not in p.argmax:
                return f"{p.name}={value!r} is not the argmax of <y, x> - γΩ(y) (use {p.name}={p.argmax[0]!r})"
        return None

# the registry, and the tables derived from it (the same objects for as long as the library is loaded: a module
# that imported one sees every mapping registered later)
REGISTRY: dict[str, Mapping] = {}
MAPPINGS: dict[str, Callable] = {}
# the built-in mappings' defaults are written in defaults.py (their functions' signatures read them at import);
# register checks that a description agrees with that table and adds the entries of new mappings
_BUILTIN_DEFAULTS = {name: dict(values) for name, values in DEFAULTS.items()}


def unknown_name(name: object) -> ValueError:
    return ValueError(f"unknown attention mapping {name!r}; valid names: {', '.join(REGISTRY)}")


def lookup(mapping: str | Mapping) -> Mapping:
    """The registered description of ``mapping`` (a name or a ``Mapping``)."""
    if isinstance(mapping, Mapping):
        if REGISTRY.get(mapping.name) is not mapping:
            raise ValueError(f"attention mapping {mapping.name!r} is not registered: attention.register it first")
        return mapping
    if not isinstance(mapping, str) or mapping not in REGISTRY:
        raise unknown_name(mapping)
    return REGISTRY[mapping]


def register(mapping: Mapping) -> Mapping:
    """Add ``mapping`` to the library (see the module doc); returns it."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"attention.register takes an attention.Mapping, got {type(mapping).__name__}")
    if mapping.name in REGISTRY:
        raise ValueError(f"attention mapping {mapping.name!r} is already registered; attention.unregister"
                         f"({mapping.name!r}) first, or choose another name")
    for key, learned in mapping.learnable().items():
        other = next((m for m in REGISTRY.values() if m.learnable().get(key, learned) != learned), None)
        if other is not None:  # a module's raw parameter must read back one way, whichever mapping runs
            raise ValueError(f"attention mapping {mapping.name!r}: a learned {key} is {learned.describe(key)} here "
                             f"but {other.learnable()[key].describe(key)} in {other.name!r}; use that "
                             "parameterization, or another name for the parameter")
    builtin = _BUILTIN_DEFAULTS.get(mapping.name)
    if builtin is not None and builtin != mapping.defaults:
        raise ValueError(f"attention mapping {mapping.name!r}: defaults {mapping.defaults} differ from "
                         f"attention/defaults.py's {builtin}")
    mapping.check({k: v for k, v in mapping.defaults.items() if k != "gamma"})  # a default must pass its check
    REGISTRY[mapping.name] = mapping
    MAPPINGS[mapping.name] = mapping.function
    DEFAULTS[mapping.name] = mapping.defaults
    _update_hints()
    return mapping


def unregister(name: str) -> Mapping:
    """Take the mapping ``name`` out of the library again; returns its description."""
    mapping = lookup(name)
    for table in (REGISTRY, MAPPINGS, DEFAULTS):
        del table[mapping.name]
    _update_hints()
    return mapping


def _update_hints():
    _layout.LEARN_HINTS.clear()
    _layout.LEARN_HINTS.update({key: learned.describe(key) for key, learned in learnable().items()})


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def learnable() -> dict[str, Learned]:
    """{parameter: its parameterization} over every registered mapping: how a raw per-head parameter reads back."""
    found: dict[str, Learned] = {}
    for mapping in REGISTRY.values():
        for key, learned in mapping.learnable().items():
            found.setdefault(key, learned)
    return found


def learnable_by(key: str) -> tuple[str, ...]:
    """The registered mappings that can learn ``key``."""
    return tuple(name for name, mapping in REGISTRY.items() if key in mapping.learnable())


__all__ = ["Mapping", "Parameter", "Learned", "register", "unregister", "lookup", "names", "learnable",
           "learnable_by", "REGISTRY", "MAPPINGS", "EXP", "SOFTPLUS_ABOVE_FLOOR", "ALPHA_FLOOR",
           "positive", "nonnegative", "in_interval", "one_of", "unknown_name"]
