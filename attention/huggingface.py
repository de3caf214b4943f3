"""Any mapping of this library as the attention of a Hugging Face ``transformers`` model.

transformers looks attention up by name in its ``AttentionInterface`` (Llama, Qwen, Mistral, Gemma, GPT-2, BERT,
Bart, T5, Whisper, ViT, CLIP, ...). ``register`` adds a name there, with a mask builder of the same name in
``AttentionMaskInterface``; then

    import attention.huggingface
    attention.huggingface.register("fusedmax", lam=0.1)      # mapping defaults to the name
    attention.huggingface.register("fusedmax-0.2", mapping="fusedmax", lam=0.2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="fusedmax")   # or from_pretrained
    model.set_attn_implementation("fusedmax-0.2")
    attention.huggingface.add_parameters(model, learn_gamma=True, learn_lam=True)      # one γ, λ per head, learned

runs the model with that mapping: masked (padded, future) keys get exactly 0 weight, ``output_attentions=True``
returns the weights, dropout applies in training, ``generate`` works with and without the KV cache.

Why the mask builder: transformers builds no mask at all for a name it does not know (causal and padding would
be lost), and for ``sdpa`` it skips the mask when ``is_causal`` can stand for it. The builder registered here is
transformers' own boolean ``sdpa_mask`` with both skips turned off, so every layer receives an exact bool mask
(sliding windows and chunked attention included, as the model's mask functions draw them). Where a model builds
no mask, causality comes from the module's ``is_causal``, as in transformers' ``sdpa``. Float masks (0 / finfo.min,
a custom 4-D mask) and T5's ``position_bias`` are added to the scores, their entries at or below finfo.min / 2
masked exactly (``attention.sdpa.split_float_mask``). Grouped-query attention repeats the key/value heads.
Soft-capping and attention sinks change the mapping itself and are refused, naming the model and the argument.

transformers is imported here, lazily, never by ``import attention``.
"""

import inspect

import torch
from torch import nn

from .registry import REGISTRY, Mapping, learnable, learnable_by, lookup, unknown_name
from .sdpa import attend, split_float_mask

# name -> (mapping, params), read at every call (registering a name again changes models that use it)
REGISTERED: dict[str, tuple[str, dict]] = {}

# keyword arguments of attention calls that change the mapping, and what they are
_UNSUPPORTED = {"softcap": "attention-logit soft-capping", "s_aux": "attention sinks", "sinks": "attention sinks",
                "indices": "sparse top-k attention indices", "block_indices": "block-sparse attention indices"}


def _transformers():
    try:
        import transformers
        from transformers.masking_utils import AttentionMaskInterface  # noqa: F401 (transformers >= 4.53)
    except ImportError as error:
        raise ImportError(
            f"attention.huggingface needs transformers >= 4.53 ({error}): pip install 'structured-attention"
            "[huggingface]' or pip install transformers") from None
    return transformers


def register(name: str, mapping: str | Mapping | None = None, **params) -> str:
    """Register ``mapping`` (a name of ``attention.MAPPINGS`` or a registered ``attention.Mapping``; default
    ``name``) with ``params`` (``gamma``,
    ``lam``, ``p``, ``alpha``) as the attention implementation ``name`` of transformers; returns ``name``, for
    ``from_pretrained(..., attn_implementation=name)``, ``from_config(...)`` or ``model.set_attn_implementation``."""
    _transformers()
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if not isinstance(name, str) or not name:
        raise TypeError(f"attention.huggingface.register: name must be a non-empty string, got {name!r}")
    builtin = (set(AttentionInterface._global_mapping) | {"eager"}) - set(REGISTERED)
    if name in builtin or name.startswith("paged|"):
        raise ValueError(f"attention.huggingface.register: {name!r} is one of transformers' own attention "
                         f"implementations; choose another name (e.g. {name + '-' + (mapping or 'fusedmax')!r})")
    mapping = name if mapping is None else mapping.name if isinstance(mapping, Mapping) else mapping
    if mapping not in REGISTRY:
        error = unknown_name(mapping)
        hint = "" if mapping != name else f" (give it as mapping=, e.g. register({name!r}, mapping='fusedmax'))"
        raise ValueError(f"attention.huggingface.register: {error}{hint}")
    try:  # check the parameters now, not at the model's first forward
        lookup(mapping).function(torch.zeros(1, 2), **params)
    except TypeError as error:
        raise TypeError(f"attention.huggingface.register({name!r}, mapping={mapping!r}): {error}") from None

    def mask(**kwargs):
        # transformers' bool mask, never skipped: without it causal and padding would be lost (see the module doc)
        kwargs.update(allow_is_causal_skip=False, allow_is_bidirectional_skip=False)
        return sdpa_mask(**kwargs)

    def forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        return _attention(name, module, query, key, value, attention_mask, scaling, dropout, **kwargs)

    forward.__name__ = forward.__qualname__ = f"attention_{mapping}"
    REGISTERED[name] = (mapping, dict(params))
    AttentionInterface.register(name, forward)
    AttentionMaskInterface.register(name, mask)
    return name


def unregister(name: str) -> None:
    """Take the attention implementation ``name`` out of transformers again (before ``attention.unregister`` of
    its mapping, or when a test cleans up: transformers' interfaces are global)."""
    if name not in REGISTERED:
        raise ValueError(f"attention.huggingface.unregister: {name!r} was not registered here; registered: "
                         f"{', '.join(REGISTERED) or 'none'}")
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    del REGISTERED[name]
    for interface in (AttentionInterface, AttentionMaskInterface):
        interface._global_mapping.pop(name, None)  # their API has register only


def _describe(module) -> str:
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    return type(module).__name__ + (f" ({model_type})" if model_type else "")


def _attention(name, module, query, key, value, attention_mask, scaling, dropout, **kwargs):
    """transformers' attention call: query (B, H, L, D), key/value (B, H_kv, S, D) -> ((B, L, H, D), weights)."""
    mapping, params = REGISTERED[name]
    for argument, what in _UNSUPPORTED.items():
        if kwargs.get(argument) is not None:
            raise NotImplementedError(
                f"attn_implementation={name!r}: {_describe(module)} passes {argument}= ({what}), which changes the "
                f"attention mapping and is not supported by {mapping}; use attn_implementation='eager' for this model")
    L, S = query.shape[-2], key.shape[-2]

    allowed, bias = None, kwargs.get("position_bias")  # T5's relative position bias is added to the scores
    if attention_mask is not None:
        attention_mask = attention_mask[..., :S]
        if attention_mask.dtype == torch.bool:
            allowed = attention_mask
        else:
            bias = attention_mask if bias is None else bias + attention_mask
    else:
        # no mask built (a model outside transformers' mask functions): causality from the module, as their sdpa
        is_causal = kwargs.get("is_causal")
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        if is_causal and L > 1:
            allowed = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        window = kwargs.get("sliding_window")
        if window is not None and not (isinstance(window, int) and S <= window):
            raise NotImplementedError(
                f"attn_implementation={name!r}: {_describe(module)} passes sliding_window={window} without a mask; "
                "build the model's masks with transformers' mask functions (create_sliding_window_causal_mask)")
    additive = None
    if bias is not None:
        bias_allowed, additive = split_float_mask(bias, query.dtype)
        allowed = bias_allowed if allowed is None else allowed & bias_allowed

    params = {**params, **learned_parameters(module)}
    dropout = dropout if module.training else 0.0
    out, weights = attend(query, key, value, allowed, additive, dropout, scaling, True, mapping, **params)
    return out.transpose(1, 2).contiguous(), weights


def learned_parameters(module: nn.Module) -> dict:
    """The mapping parameters that ``add_parameters`` put on an attention module: {"gamma": (H, 1, 1), ...}."""
    return {key: learned.to_value(getattr(module, learned.prefix + key)) for key, learned in learnable().items()
            if hasattr(module, learned.prefix + key)}


_uses_interface: dict[type, bool] = {}


def _is_attention(module: nn.Module) -> bool:
    """Whether a module calls transformers' attention interface (its forward looks the implementation up)."""
    cls = type(module)
    if cls not in _uses_interface:
        try:
            source = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            source = ""
        _uses_interface[cls] = "ALL_ATTENTION_FUNCTIONS" in source
    return _uses_interface[cls]


def check(model: nn.Module) -> nn.Module:
    """``model``, when its attention goes through transformers' attention interface; otherwise a
    ``NotImplementedError`` naming the first attention module class that computes softmax attention itself (Bloom,
    MPT and Falcon in transformers 5: ``attn_implementation=<registered name>`` is accepted there and silently runs
    softmax). A module named ``*Attention*`` that wraps one calling the interface (BERT's ``BertAttention``) passes;
    a model with no module calling the interface is a ``ValueError``.
    Called by ``add_parameters``; call it after loading any model whose family is not listed in the README."""
    calling = [path for path, module in model.named_modules() if _is_attention(module)]
    for path, module in model.named_modules():
        if "attention" not in type(module).__name__.lower() or _is_attention(module):
            continue
        if any(inner.startswith(f"{path}.") for inner in calling) or not path:
            continue  # a wrapper around one that calls the interface (or the model itself)
        raise NotImplementedError(
            f"attention.huggingface: {path} ({_describe(module)}) computes its attention itself, not through "
            f"transformers' attention interface, so a registered mapping never runs there (softmax does, "
            f"silently); use a model family whose attention goes through the interface (see attention/README.md)")
    if not calling:  # (not a transformers model at all, e.g. a bare nn.Module)
        raise ValueError(f"attention.huggingface: found no module of {type(model).__name__} that calls "
                         "transformers' AttentionInterface: a registered mapping would never run")
    return model


def _num_heads(module: nn.Module, path: str) -> int:
    for attr in ("num_heads", "num_attention_heads", "n_heads", "n_head"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    heads = getattr(getattr(module, "config", None), "num_attention_heads", None)
    if isinstance(heads, int):
        return heads
    raise ValueError(f"attention.huggingface.add_parameters: cannot tell the number of heads of {path} "
                     f"({type(module).__name__}); pass num_heads=")


def add_parameters(model: nn.Module, learn_gamma: bool = False, learn_lam: bool = False, learn_alpha: bool = False,
                   num_heads: int | None = None, learn: tuple[str, ...] = ()) -> list[str]:
    """Learnable γ, λ (fusedmax, oscarmax) and α (entmax), one per head, on every attention module of ``model``
    (``learn``: the names of any learnable parameters of the registered mapping, as ``MultiheadAttention``'s).

    Each is an ``nn.Parameter`` of shape (heads, 1, 1) on the module, parametrised so that it stays in range:
    ``log_gamma`` (γ = exp), ``log_lam`` (λ = exp), ``raw_alpha`` (α = 1.01 + softplus, ``MultiheadAttention``'s
    parametrization, the same floor as Correia et al.'s); they start from the
    registered value (or the mapping's default) and train with the model's optimizer (create it afterwards).
    The model must already run a ``register``-ed implementation. Returns the names of the modules changed.
    """
    flags = (("gamma", learn_gamma), ("lam", learn_lam), ("alpha", learn_alpha))
    wanted = list(dict.fromkeys([*(key for key, on in flags if on), *learn]))
    if not wanted:
        raise ValueError("attention.huggingface.add_parameters: ask for learn_gamma, learn_lam and/or learn_alpha")
    check(model)  # a family that bypasses the interface would learn parameters that nothing uses
    default = getattr(getattr(model, "config", None), "_attn_implementation", None)
    changed = []
    for path, module in model.named_modules():
        if not _is_attention(module):
            continue
        implementation = getattr(getattr(module, "config", None), "_attn_implementation", default)
        if implementation not in REGISTERED:
            raise ValueError(
                f"attention.huggingface.add_parameters: {path or 'the model'} runs attn_implementation="
                f"{implementation!r}, not one registered here; attention.huggingface.register('fusedmax') and "
                "from_pretrained(..., attn_implementation='fusedmax') or model.set_attn_implementation('fusedmax') "
                "first")
        mapping, params = REGISTERED[implementation]
        heads = num_heads or _num_heads(module, path)
        reference = next(module.parameters(), None)
        factory = {"device": reference.device, "dtype": reference.dtype} if reference is not None else {}
        description = lookup(mapping)
        for key in wanted:
            if key not in description.learnable():
                able = " or ".join(learnable_by(key)) or "a registered mapping with a learnable " + key
                raise ValueError(f"attention.huggingface.add_parameters: learn_{key} needs mapping {able}; "
                                 f"{implementation!r} is {mapping}")
        if "alpha" in wanted:
            _check_tensor_alpha()
        made = description.per_head_parameters(wanted, params, heads, "attention.huggingface.add_parameters", **factory)
        for raw_name, parameter in made.items():
            module.register_parameter(raw_name, parameter)
        changed.append(path)
    if not changed:
        raise ValueError(f"attention.huggingface.add_parameters: found no module of {type(model).__name__} that "
                         "calls transformers' AttentionInterface")
    return changed


def _check_tensor_alpha():
    try:
        lookup("entmax").function(torch.zeros(1, 2), alpha=torch.tensor([[1.5]], requires_grad=True))
    except TypeError as error:
        raise NotImplementedError(f"attention.huggingface.add_parameters: learn_alpha needs attention.entmax to take "
                                  f"a tensor alpha, which this version does not ({error})") from None
