"""``nn.Module`` forms of the mappings, for models and for Hydra's ``_target_``.

A parameter given as a tensor is kept as it is: an ``nn.Parameter`` (say one γ per head, shape (heads, 1, 1))
is registered and learned with the model; its gradient is exact (see ``attention.functions``).
"""

import torch
from torch import nn

from . import functions
from ._layout import check_parameter
from .defaults import DEFAULTS, GAMMA


class _Mapping(nn.Module):
    name = ""

    def __init__(self, dim: int = -1, gamma: float | torch.Tensor = GAMMA):
        super().__init__()
        self.dim = dim
        self.gamma = check_parameter("gamma", self.name, gamma, positive=True)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={_show(v)}" for k, v in self.params().items())
        return f"dim={self.dim}, gamma={_show(self.gamma)}{extra}"

    def params(self) -> dict:
        return {}


def _show(value):
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    return value


class Softmax(_Mapping):
    name = "softmax"

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return functions.softmax(scores, dim=self.dim, gamma=self.gamma, mask=mask)


class Sparsemax(_Mapping):
    name = "sparsemax"

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return functions.sparsemax(scores, dim=self.dim, gamma=self.gamma, mask=mask)


class Fusedmax(_Mapping):
    name = "fusedmax"

    def __init__(self, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
                 lam: float | torch.Tensor = DEFAULTS["fusedmax"]["lam"]):
        super().__init__(dim, gamma)
        self.lam = check_parameter("lam", self.name, lam, positive=False)

    def params(self) -> dict:
        return {"lam": self.lam}

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return functions.fusedmax(scores, dim=self.dim, gamma=self.gamma, lam=self.lam, mask=mask)


class Oscarmax(_Mapping):
    name = "oscarmax"

    def __init__(self, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
                 lam: float | torch.Tensor = DEFAULTS["oscarmax"]["lam"],
                 variant: str = DEFAULTS["oscarmax"]["variant"]):
        super().__init__(dim, gamma)
        self.lam = check_parameter("lam", self.name, lam, positive=False)
        if variant not in ("exact", "owl"):
            raise ValueError(f"oscarmax: variant must be 'exact' or 'owl', got {variant!r}")
        self.variant = variant

    def params(self) -> dict:
        return {"lam": self.lam, "variant": self.variant}

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return functions.oscarmax(
            scores, dim=self.dim, gamma=self.gamma, lam=self.lam, mask=mask, variant=self.variant
        )


class SqPnormMax(_Mapping):
    name = "sq_pnorm_max"

    def __init__(self, dim: int = -1, gamma: float | torch.Tensor = GAMMA, p: float = DEFAULTS["sq_pnorm_max"]["p"]):
        super().__init__(dim, gamma)
        self.p = check_parameter("p", self.name, p, positive=True, low=1.0, high=2.0)

    def params(self) -> dict:
        return {"p": self.p}

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return functions.sq_pnorm_max(scores, dim=self.dim, gamma=self.gamma, p=self.p, mask=mask)


class Entmax(_Mapping):
    name = "entmax"

    def __init__(self, dim: int = -1, gamma: float | torch.Tensor = GAMMA, alpha: float = DEFAULTS["entmax"]["alpha"]):
        super().__init__(dim, gamma)
        self.alpha = functions._check_alpha(alpha)

    def params(self) -> dict:
        return {"alpha": self.alpha}

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return functions.entmax(scores, alpha=self.alpha, dim=self.dim, gamma=self.gamma, mask=mask)
