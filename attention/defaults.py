"""The library's own mappings' default parameters, written once. Their functions' signatures and their descriptions
(``attention/mappings.py``) read them from here; ``attention.register`` adds a new mapping's defaults to the same
table, so everything that reads it (modules, wrappers, the harness's configs: ``configs/attention/*.yaml``: ``lam:
${attention_default:fusedmax,lam}``) knows every registered mapping, and a run's recorded config holds the values it
ran with.

    >>> attention.DEFAULTS["fusedmax"]        # {"gamma": 1.0, "lam": 0.1}
"""

GAMMA = 1.0  # the temperature every mapping divides the scores by

DEFAULTS: dict[str, dict] = {
    "softmax": {"gamma": GAMMA},
    "sparsemax": {"gamma": GAMMA},
    # λ: this library's defaults, not values from the paper; sweep them on validation data
    "fusedmax": {"gamma": GAMMA, "lam": 0.1},
    # variant "exact": the argmax of the regularized problem ("owl": the authors' sparsemax(prox_OWL(x / γ)))
    "oscarmax": {"gamma": GAMMA, "lam": 0.01, "variant": "exact"},
    "sq_pnorm_max": {"gamma": GAMMA, "p": 1.5},  # the paper's Figure 2 value
    "entmax": {"gamma": GAMMA, "alpha": 1.5},  # the exact, sort-based case
}

__all__ = ["DEFAULTS", "GAMMA"]
