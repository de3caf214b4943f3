"""``nn.Module`` forms of the mappings, for models and for Hydra's ``_target_``."""

from torch import nn

from . import functions
from ._layout import check_parameter


class _Mapping(nn.Module):
    name = ""

    def __init__(self, dim: int = -1, gamma: float = 1.0):
        super().__init__()
        self.dim = dim
        self.gamma = check_parameter("gamma", self.name, gamma, positive=True)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.params().items())
        return f"dim={self.dim}, gamma={self.gamma}{extra}"

    def params(self) -> dict:
        return {}


class Softmax(_Mapping):
    name = "softmax"

    def forward(self, scores, mask=None):
        return functions.softmax(scores, dim=self.dim, gamma=self.gamma, mask=mask)


class Sparsemax(_Mapping):
    name = "sparsemax"

    def forward(self, scores, mask=None):
        return functions.sparsemax(scores, dim=self.dim, gamma=self.gamma, mask=mask)


class Fusedmax(_Mapping):
    name = "fusedmax"

    def __init__(self, dim: int = -1, gamma: float = 1.0, lam: float = 0.1):
        super().__init__(dim, gamma)
        self.lam = check_parameter("lam", self.name, lam, positive=False)

    def params(self) -> dict:
        return {"lam": self.lam}

    def forward(self, scores, mask=None):
        return functions.fusedmax(scores, dim=self.dim, gamma=self.gamma, lam=self.lam, mask=mask)


class Oscarmax(_Mapping):
    name = "oscarmax"

    def __init__(self, dim: int = -1, gamma: float = 1.0, lam: float = 0.01, variant: str = "exact"):
        super().__init__(dim, gamma)
        self.lam = check_parameter("lam", self.name, lam, positive=False)
        if variant not in ("exact", "owl"):
            raise ValueError(f"oscarmax: variant must be 'exact' or 'owl', got {variant!r}")
        self.variant = variant

    def params(self) -> dict:
        return {"lam": self.lam, "variant": self.variant}

    def forward(self, scores, mask=None):
        return functions.oscarmax(
            scores, dim=self.dim, gamma=self.gamma, lam=self.lam, mask=mask, variant=self.variant
        )
