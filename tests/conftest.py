"""Shared fixtures and helpers for the attention test suite."""

import numpy as np
import pytest
import torch

import attention

# mapping name -> extra keyword arguments that make the mapping non-trivial (structured penalties active)
CASES = {
    "softmax": {},
    "sparsemax": {},
    "fusedmax": {"lam": 0.3},
    "oscarmax": {"lam": 0.1},
    "oscarmax-owl": {"lam": 0.1, "variant": "owl"},
    "sq_pnorm_max": {"p": 1.5},
    "entmax": {"alpha": 1.5},  # the exact sort-based threshold
    "entmax-bisect": {"alpha": 1.3},  # safeguarded Newton
}


def mapping_of(case: str):
    """(function, base name, kwargs) for a case id of ``CASES``."""
    name = case.split("-")[0]
    return attention.MAPPINGS[name], name, dict(CASES[case])


@pytest.fixture
def gen():
    """A seeded torch generator: every test draws the same numbers on every run."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randn(gen, *shape, dtype=torch.float64, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


def random_mask(gen, *shape, p=0.7):
    return torch.rand(*shape, generator=gen) < p


def compact(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The unmasked entries of a 1-D tensor, in order."""
    return x[mask]

