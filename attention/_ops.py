r"""The kernels as torch operators, ``torch.ops.attention.*``: what torch.compile and torch.export see.

Each mapping's forward and backward is a ``torch.library.custom_op`` with a fake implementation (output shapes
only) and its closed-form backward registered with ``register_autograd``. Dynamo records one opaque call instead
of tracing into numba, AOTAutograd calls the same backward as eager, and ``torch.export`` keeps the op in its
graph. Inside an op the tensors' device decides: the numba CPU kernels (``_cpu``) on the host, elsewhere plain
torch (``_torch``) or, for the prox forward, the numba-cuda kernels (``_cuda``) with one fallback to the CPU
kernels (this module is the only place that decides; it warns once).

Eager calls skip the dispatcher: a Python custom op costs about 25 µs per forward + backward (measured here),
more than a whole 8×10 sparsemax. Outside torch.compile the same implementation, ``setup_context`` and backward
functions therefore run in a plain ``autograd.Function`` (``Operator.eager``); tests/test_compile.py runs
``torch.library.opcheck`` on every op and compares compiled with eager results.

Value checks run inside the ops (``check``): a CPU kernel counts the rows with non-finite scores as it reads them
(free), elsewhere a reduction (one device-to-host sync, only when checks are on); tensor λ and α are checked there
too. The op raises ``NonFiniteRows``; in eager ``functions`` turns it into the error that names the index.

Masks: the kernels read each row's valid entries first. Every op and backward op also takes the rows' mask,
``valid`` (last, default None: the rows are valid-first already, as ``_layout.to_rows`` leaves them in eager
calls). Compiled graphs on the host pass it with the rows in the scores' order, since a graph cannot branch on the
mask's values but an op can: a prefix mask (padding, causal) goes straight to the kernels, any other is gathered
valid-first inside the op and its results scattered back (``_ordered``, one wrapper for every op).

Second derivatives: with ``create_graph=True`` the backward runs as differentiable torch expressions of the saved
output y (and of α), so double backward is exact: the Jacobians of sparsemax, fusedmax and oscarmax are piecewise
constant in z, those of sq_pnorm_max and entmax get their derivative through y. Without ``create_graph`` the
backward runs the kernels.
"""

import functools
import inspect
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor
from torch.autograd import Function

from . import _cpu, _cuda, _layout, _torch
from ._layout import check_tensor_parameter
from ._numba import follow_torch_threads

PROX_NAMES = {_cpu.PROX_TV: "fusedmax", _cpu.PROX_SORTED: "oscarmax", _cpu.PROX_OWL: "oscarmax"}


class NonFiniteRows(ValueError):
    """Scores (divided by γ) that are nan or ±inf in unmasked entries of ``rows`` rows."""

    def __init__(self, mapping: str, rows: int):
        super().__init__(f"{mapping}: scores (divided by gamma) contain nan or inf in {rows} row(s); fix the model, "
                         "mask those positions out or use a larger gamma")
        self.rows = rows


def _np(t: Tensor):
    return t.detach().numpy()


def _values(rows: Optional[Tensor], value: float):
    """A parameter for the kernels: a float64 array of one value, or of one value per row."""
    if rows is not None:
        return rows.detach().to(dtype=torch.float64).reshape(-1).cpu().numpy()
    return _one_value(value)


@functools.lru_cache(maxsize=256)
def _one_value(value: float):
    """np.full(1, value), made once per value (the kernels only read it): ~1.5 µs a call at small shapes."""
    return np.full(1, value, dtype=np.float64)


def _check_host_kernel(bad: int, check: bool, mapping: str) -> None:
    if bad and check:
        raise NonFiniteRows(mapping, bad)


def _check_off_host(z: Tensor, lengths: Tensor, check: bool, mapping: str) -> None:
    """Off the host the kernels do not count non-finite rows: one reduction and a sync, only if asked."""
    if check:
        valid = _torch.valid_positions(lengths, z.shape[-1])
        bad = int((~torch.isfinite(z) & valid).any(-1).sum())
        if bad:
            raise NonFiniteRows(mapping, bad)


def _check_parameter_rows(name: str, mapping: str, rows: Optional[Tensor], check: bool, **bounds) -> None:
    if check and rows is not None:
        check_tensor_parameter(name, mapping, rows.detach(), **bounds)


# ---------------------------------------------------------------------------------------------------------------
# implementations: (rows, d) float32/float64 z with lengths[r] valid entries in front


def sparsemax_forward(z: Tensor, lengths: Tensor, check: bool) -> Tensor:
    z = z.contiguous()
    if _layout.on_host(z.device):  # (through the module: tests route CPU tensors off the host by replacing it)
        follow_torch_threads()
        y = torch.empty_like(z)
        _check_host_kernel(_cpu.sparsemax_forward(_np(z), _np(lengths), y.numpy()), check, "sparsemax")
        return y
    _check_off_host(z, lengths, check, "sparsemax")
    return _torch.sparsemax_forward(z, lengths)


def sparsemax_backward(grad: Tensor, y: Tensor, lengths: Tensor) -> Tensor:
    # J = diag(s) - s sᵀ/|S|, s = 1 on the support S of y: keep the gradient on S and remove its mean there
    grad = grad.contiguous()
    if _layout.on_host(grad.device):
        follow_torch_threads()
        grad_z = torch.empty_like(grad)
        _cpu.sparsemax_backward(_np(grad), _np(y), _np(lengths), grad_z.numpy())
        return grad_z
    return _torch.sparsemax_backward(grad, y)


def cpu_prox_forward(z, lengths, lam, variant):
    """(y, groups, scale, number of non-finite rows) by the CPU kernels; ``lam`` a float or a tensor of one value
    or one per row; ``scale`` is only filled for OWL (a 1x1 zero stub otherwise)."""
    follow_torch_threads()
    y = torch.empty_like(z)
    groups = torch.empty(z.shape, dtype=torch.int32)
    scale = torch.empty_like(z) if variant == _cpu.PROX_OWL else torch.zeros(1, 1, dtype=z.dtype)
    lam_values = _values(lam, 0.0) if isinstance(lam, Tensor) else _values(None, lam)
    bad = _cpu.prox_sparsemax_forward(_np(z), _np(lengths), lam_values, variant, y.numpy(), groups.numpy(),
                                      scale.numpy())
    return y, groups, scale, bad


_gpu_error: Exception | None = None  # why the numba-cuda kernels could not run here (then the CPU kernels do)
_warned_fallback = False


def _gpu_kernels_apply(z: Tensor) -> bool:
    return z.device.type == "cuda" and _cuda.available()


def prox_forward_off_host(z, lengths, lam, variant):
    """The prox forward for a tensor off the host: the numba-cuda kernels where they run (on CPU tensors in numba's
    CUDA simulator, where a failure must show), else the CPU kernels with one copy each way and one warning."""
    global _gpu_error, _warned_fallback
    if _cuda.simulated():
        return _cuda.prox_sparsemax_forward(z, lengths, lam, variant)
    if _gpu_error is None and _gpu_kernels_apply(z):
        try:
            return _cuda.prox_sparsemax_forward(z, lengths, lam, variant)
        except Exception as error:  # noqa: BLE001 - NvvmSupportError, CudaSupportError, a driver error ...
            _gpu_error = error
    if not _warned_fallback:
        if _gpu_error is not None:
            why = (f"numba-cuda is installed but cannot run its kernels here ({type(_gpu_error).__name__}: "
                   f"{_gpu_error}); install a working CUDA toolkit for numba (`pip install 'numba-cuda[cu12]'`) "
                   "or uninstall numba-cuda to silence this")
        elif _cuda.cuda is None:
            why = "numba-cuda is not installed; `pip install numba-cuda` for the GPU kernel"
        else:
            why = f"numba-cuda has no kernel for {z.device.type} tensors"
        warnings.warn(f"attention: the fusedmax/oscarmax prox forward runs on the CPU kernels (one copy each way): "
                      f"{why}", RuntimeWarning, stacklevel=2)
        _warned_fallback = True
    lam_cpu = lam.detach().cpu() if isinstance(lam, Tensor) else lam
    y, groups, scale, _ = cpu_prox_forward(z.detach().cpu().contiguous(), lengths.cpu(), lam_cpu, variant)
    return y.to(z.device), groups.to(z.device), scale.to(z.device)


def prox_sparsemax_forward(z: Tensor, lengths: Tensor, lam_rows: Optional[Tensor], lam: float, variant: int,
                           check: bool) -> tuple[Tensor, Tensor, Tensor]:
    """y = proj_Δ(prox(z)) row by row, for prox = TV (fusedmax), the sorted weighted sum (oscarmax) or OWL; with the
    group labels (and OWL's scale) that the backward needs. λ: ``lam_rows`` (one value, or one per row) if given,
    else ``lam``."""
    mapping = PROX_NAMES[variant]
    _check_parameter_rows("lam", mapping, lam_rows, check, positive=False)
    z = z.contiguous()
    lam_value = lam if lam_rows is None else lam_rows
    if _layout.on_host(z.device):
        y, groups, scale, bad = cpu_prox_forward(z, lengths, lam_value, variant)
        _check_host_kernel(bad, check, mapping)
        return y, groups, scale
    _check_off_host(z, lengths, check, mapping)
    y, groups, scale = prox_forward_off_host(z, lengths, lam_value, variant)
    if variant != _cpu.PROX_OWL and scale.shape != (1, 1):  # the GPU kernels fill a whole scale: the same stub
        scale = torch.zeros(1, 1, dtype=z.dtype, device=z.device)
    return y, groups, scale


def prox_sparsemax_backward(grad: Tensor, y: Tensor, groups: Tensor, scale: Tensor, lengths: Tensor,
                            variant: int) -> Tensor:
    # chain rule: z -> u = prox(z) -> y = proj_Δ(u). Both Jacobians are symmetric, so the vector-Jacobian
    # product applies the sparsemax Jacobian at u (centre on supp y), then the prox Jacobian D A D
    # (average over each fused run / pooled block, with OWL's signs in D)
    grad = grad.contiguous()
    if _layout.on_host(grad.device):
        follow_torch_threads()
        grad_z = torch.empty_like(grad)
        if variant == _cpu.PROX_OWL:
            _cpu.owl_sparsemax_backward(_np(grad), _np(y), _np(groups), _np(scale), _np(lengths), grad_z.numpy())
        elif variant == _cpu.PROX_TV:
            _cpu.tv_sparsemax_backward(_np(grad), _np(y), _np(groups), _np(lengths), grad_z.numpy())
        else:
            _cpu.prox_sparsemax_backward(_np(grad), _np(y), _np(groups), _np(lengths), grad_z.numpy())
        return grad_z
    return _torch.prox_sparsemax_backward(grad, y, groups, scale if variant == _cpu.PROX_OWL else None, lengths)


def sq_pnorm_forward(z: Tensor, lengths: Tensor, p: float, check: bool) -> Tensor:
    z = z.contiguous()
    if _layout.on_host(z.device):
        follow_torch_threads()
        y = torch.empty_like(z)
        _check_host_kernel(_cpu.sq_pnorm_forward(_np(z), _np(lengths), p, y.numpy()), check, "sq_pnorm_max")
        return y
    _check_off_host(z, lengths, check, "sq_pnorm_max")
    return _torch.sq_pnorm_forward(z, lengths, p)


def sq_pnorm_backward(grad: Tensor, y: Tensor, lengths: Tensor, p: float) -> Tensor:
    # implicit differentiation of ∇Ω(y) = z - τ on the support: J = H⁻¹ - H⁻¹1 1ᵀH⁻¹ / 1ᵀH⁻¹1 with H the
    # Hessian of ½‖y‖_p² there (diagonal plus rank one); see _torch.sq_pnorm_backward
    grad = grad.contiguous()
    if _layout.on_host(grad.device):
        follow_torch_threads()
        grad_z = torch.empty_like(grad)
        _cpu.sq_pnorm_backward(_np(grad), _np(y), _np(lengths), p, grad_z.numpy())
        return grad_z
    return _torch.sq_pnorm_backward(grad, y, p)


def _alpha_rows(alpha_rows: Optional[Tensor], alpha: float, dtype):
    """α for the torch formulas: a float, or a tensor that broadcasts against (rows, d)."""
    if alpha_rows is None:
        return alpha
    alpha_rows = alpha_rows.to(dtype)
    return alpha_rows.unsqueeze(-1) if alpha_rows.dim() else alpha_rows


def entmax_forward(z: Tensor, lengths: Tensor, alpha_rows: Optional[Tensor], alpha: float, check: bool) -> Tensor:
    """α-entmax row by row; α: ``alpha_rows`` (one value, or one per row) if given, else ``alpha``."""
    _check_parameter_rows("alpha", "entmax", alpha_rows, check, positive=True, low=1.0)
    z = z.contiguous()
    if _layout.on_host(z.device):
        follow_torch_threads()
        y = torch.empty_like(z)
        bad = _cpu.entmax_forward(_np(z), _np(lengths), _values(alpha_rows, alpha), y.numpy())
        _check_host_kernel(bad, check, "entmax")
        return y
    _check_off_host(z, lengths, check, "entmax")
    return _torch.entmax_forward(z, lengths, _alpha_rows(alpha_rows, alpha, z.dtype))


def entmax_backward(grad: Tensor, y: Tensor, lengths: Tensor, alpha_rows: Optional[Tensor], alpha: float) -> Tensor:
    # implicit differentiation: on the support dy/dz = diag(s) - s sᵀ / Σs with s = y^(2-α)
    grad = grad.contiguous()
    if _layout.on_host(grad.device):
        follow_torch_threads()
        grad_z = torch.empty_like(grad)
        _cpu.entmax_backward(_np(grad), _np(y), _np(lengths), _values(alpha_rows, alpha), grad_z.numpy())
        return grad_z
    return _torch.entmax_backward(grad, y, _alpha_rows(alpha_rows, alpha, grad.dtype))


# ---------------------------------------------------------------------------------------------------------------
# autograd: setup_context and backward, shared by the custom ops and the eager Functions. A setup returns the
# tensors to save; a backward gets them as ``saved``. ``kernel`` is the backward op (compiled graphs) or its
# implementation (eager). torch.is_grad_enabled() in a backward means create_graph=True: then the differentiable
# torch formulas run instead of the kernel. ``layout`` puts rows valid-first for the torch code that needs it.


def _per_row_grad(per_row: Tensor, rows: Tensor) -> Tensor:
    """The gradient of a parameter given as ``rows`` (0-d, or one value per row) from its per-row gradient."""
    return (per_row.sum() if rows.dim() == 0 else per_row).to(rows.dtype)


def _sparsemax_setup(ctx, inputs, output):
    return output, inputs[1]


def _sparsemax_grad(ctx, saved, grad_y, kernel, layout):
    y, lengths = saved
    if torch.is_grad_enabled():  # (row by row, blind to the order of a row's entries: no layout)
        return _torch.sparsemax_backward(grad_y, y), None, None
    return kernel(grad_y, y, lengths), None, None


def _prox_setup(ctx, inputs, output):
    _, lengths, lam_rows, _, variant, _ = inputs
    y, groups, scale = output
    ctx.mark_non_differentiable(groups, scale)
    ctx.set_materialize_grads(False)  # no (rows, d) zero gradients for groups and scale
    ctx.variant = variant
    return y, groups, scale, lengths, lam_rows


def _prox_grad(ctx, saved, grad_y, _grad_groups, _grad_scale, kernel, layout):
    if grad_y is None:
        return None, None, None, None, None, None
    y, groups, scale, lengths, lam_rows = saved
    if torch.is_grad_enabled():  # TV's runs and the groups' labels need the valid entries first
        owl_scale = layout.rows(scale) if ctx.variant == _cpu.PROX_OWL else None
        grad_z = layout.restore(_torch.prox_sparsemax_backward(layout.rows(grad_y), layout.rows(y),
                                                               layout.rows(groups), owl_scale, lengths))
    else:
        grad_z = kernel(grad_y, y, groups, scale, lengths, ctx.variant)
    grad_lam = None
    if ctx.needs_input_grad[2]:
        per_row = _torch.prox_lambda_grad(layout.rows(grad_z), layout.rows(y), layout.rows(groups), lengths,
                                          ctx.variant)
        grad_lam = _per_row_grad(per_row, lam_rows)
    return grad_z, None, grad_lam, None, None, None


def _sq_pnorm_setup(ctx, inputs, output):
    ctx.p = inputs[2]
    return output, inputs[1]


def _sq_pnorm_grad(ctx, saved, grad_y, kernel, layout):
    y, lengths = saved
    if torch.is_grad_enabled():
        return _torch.sq_pnorm_backward(grad_y, y, ctx.p), None, None, None
    return kernel(grad_y, y, lengths, ctx.p), None, None, None


def _entmax_setup(ctx, inputs, output):
    _, lengths, alpha_rows, alpha, _ = inputs
    ctx.alpha = alpha
    return output, lengths, alpha_rows


def _entmax_grad(ctx, saved, grad_y, kernel, layout):
    y, lengths, alpha_rows = saved
    alpha = _alpha_rows(alpha_rows, ctx.alpha, y.dtype)
    if torch.is_grad_enabled():
        grad_z = _torch.entmax_backward(grad_y, y, alpha)
    else:
        grad_z = kernel(grad_y, y, lengths, alpha_rows, ctx.alpha)
    grad_alpha = None
    if ctx.needs_input_grad[2]:
        grad_alpha = _per_row_grad(_torch.entmax_alpha_grad(grad_y, y, alpha), alpha_rows)
    return grad_z, None, grad_alpha, None, None


# ---------------------------------------------------------------------------------------------------------------
# the rows' order. The kernels read each row's valid entries first (``lengths`` of them). ``_layout.to_rows``
# gathers them there before the op, except in a compiled graph on the host: a graph cannot branch on the mask's
# values, so it would gather (and scatter back) on every call. There every op and backward op gets the mask as
# ``valid`` with rows in the scores' order and decides inside, where values can be read: a prefix mask (padding,
# causal) goes straight to the kernels, any other is gathered valid-first and the results are scattered back.


def _per_entry(tensor, shape) -> bool:
    """Whether an op's input or output holds one value per entry (z, y, gradients, groups, OWL's scale): the rows'
    shape. (The 1x1 stub scale has it only for one row of one entry, where the order is the identity.)"""
    return isinstance(tensor, Tensor) and tensor.shape == shape


def _with_valid(signature: inspect.Signature) -> inspect.Signature:
    valid = inspect.Parameter("valid", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                              annotation=Optional[Tensor])
    return signature.replace(parameters=[*signature.parameters.values(), valid])


def _ordered(impl):
    """``impl`` (rows valid-first) as a function of the rows in the scores' order and their mask ``valid`` (None:
    the rows are valid-first already): one wrapper for every op and backward op."""
    signature = _with_valid(inspect.signature(impl))

    def ordered(*args, **kwargs):
        inputs, valid = _split_valid(signature, args, kwargs)
        order = None if valid is None else _order_where_needed(valid)
        if order is None:
            return impl(*inputs)
        shape = inputs[0].shape
        output = impl(*(t.gather(-1, order) if _per_entry(t, shape) else t for t in inputs))
        # (the order is a permutation: every entry is written, no zeros to fill first)
        if isinstance(output, tuple):
            return tuple(_layout.scatter_back(t, order, permutation=True) if _per_entry(t, shape) else t
                         for t in output)
        return _layout.scatter_back(output, order, permutation=True)

    functools.update_wrapper(ordered, impl)
    ordered.__signature__ = signature
    return ordered


def _order_where_needed(valid: Tensor) -> Optional[Tensor]:
    """The valid-first order of the rows that ``valid`` masks (any shape with d last, possibly a broadcast view),
    or None for a prefix mask on the host. Off the host always the order: deciding would be a sync."""
    if _layout.on_host(valid.device) and _layout.is_stored_prefix(valid):
        return None
    return _layout.valid_first_order(valid.reshape(-1, valid.shape[-1]))


def _split_valid(signature: inspect.Signature, args: tuple, kwargs: dict) -> tuple[tuple, Optional[Tensor]]:
    """(the other inputs, valid) of a call; binding costs microseconds, as much as a small kernel: only where the
    call did not pass every input in order."""
    if kwargs or len(args) != len(signature.parameters):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        args = bound.args
    return args[:-1], args[-1]


class _Layout:
    """For the torch code in a backward (λ's gradient, double backward): rows in the scores' order put valid-first
    by the order of ``valid`` and back (always: a traced backward cannot branch on values), or left as they are
    (``valid`` None: they are valid-first already)."""

    def __init__(self, valid: Optional[Tensor]):
        self.valid = valid

    @functools.cached_property
    def order(self) -> Tensor:
        return _layout.valid_first_order(self.valid.reshape(-1, self.valid.shape[-1]))

    def rows(self, tensor: Tensor) -> Tensor:
        return tensor if self.valid is None else tensor.gather(-1, self.order)

    def restore(self, rows: Tensor) -> Tensor:
        return rows if self.valid is None else _layout.scatter_back(rows, self.order)


_ROWS_AS_GIVEN = _Layout(None)


# ---------------------------------------------------------------------------------------------------------------
# the operators


@dataclass(frozen=True)
class Operator:
    """A forward kernel as a custom op (``op``, with its backward op) and as an eager ``autograd.Function``."""

    op: Callable
    backward_op: Callable
    eager: type


def _operator(name: str, forward, fake, setup, grad, backward, backward_fake) -> Operator:
    """The op, backward op and eager Function of a mapping, each taking the rows' mask ``valid`` last
    (``_ordered``). Where valid is None the eager Function calls the implementations as they are: a few µs of
    Python per call, as much as a small kernel."""
    plain_forward, plain_backward = forward, backward
    forward, backward = _ordered(forward), _ordered(backward)
    forward_signature, backward_signature = inspect.signature(forward), inspect.signature(backward)
    backward_op = torch.library.custom_op(f"attention::{name}_backward", backward, mutates_args=())
    backward_op.register_fake(_ignoring_valid(backward_fake, backward_signature))
    op = torch.library.custom_op(f"attention::{name}", forward, mutates_args=())
    op.register_fake(_ignoring_valid(fake, forward_signature))

    def setup_with_valid(ctx, inputs, output):
        inputs, valid = _split_valid(forward_signature, inputs, {})
        ctx.save_for_backward(*setup(ctx, inputs, output), valid)

    def grad_with_valid(ctx, *grads, kernel, plain_kernel):
        *saved, valid = ctx.saved_tensors
        if valid is None:
            return (*grad(ctx, saved, *grads, kernel=plain_kernel, layout=_ROWS_AS_GIVEN), None)
        grads = grad(ctx, saved, *grads, kernel=lambda *inputs: kernel(*inputs, valid), layout=_Layout(valid))
        return (*grads, None)

    op.register_autograd(functools.partial(grad_with_valid, kernel=backward_op, plain_kernel=backward_op),
                         setup_context=setup_with_valid)

    def eager_forward(ctx, *inputs):
        inputs, valid = _split_valid(forward_signature, inputs, {})
        output = plain_forward(*inputs) if valid is None else forward(*inputs, valid)
        ctx.save_for_backward(*setup(ctx, inputs, output), valid)
        return output

    def eager_backward(ctx, *grads):
        return grad_with_valid(ctx, *grads, kernel=backward, plain_kernel=plain_backward)

    eager = type(f"{name.title().replace('_', '')}Function", (Function,),
                 {"forward": staticmethod(eager_forward), "backward": staticmethod(eager_backward)})
    return Operator(op, backward_op, eager)


def _ignoring_valid(fake, signature):
    def fake_with_valid(*args, **kwargs):
        return fake(*_split_valid(signature, args, kwargs)[0])

    return fake_with_valid


def _like(z, *rest):
    return torch.empty_like(z)


def _prox_fake(z, lengths, lam_rows, lam, variant, check):
    scale = torch.empty_like(z) if variant == _cpu.PROX_OWL else z.new_empty(1, 1)
    return torch.empty_like(z), torch.empty(z.shape, dtype=torch.int32, device=z.device), scale


sparsemax = _operator("sparsemax", sparsemax_forward, _like, _sparsemax_setup, _sparsemax_grad,
                      sparsemax_backward, _like)
prox_sparsemax = _operator("prox_sparsemax", prox_sparsemax_forward, _prox_fake, _prox_setup, _prox_grad,
                           prox_sparsemax_backward, _like)
sq_pnorm_max = _operator("sq_pnorm_max", sq_pnorm_forward, _like, _sq_pnorm_setup, _sq_pnorm_grad,
                         sq_pnorm_backward, _like)
entmax = _operator("entmax", entmax_forward, _like, _entmax_setup, _entmax_grad, entmax_backward, _like)
OPERATORS = {"sparsemax": sparsemax, "prox_sparsemax": prox_sparsemax, "sq_pnorm_max": sq_pnorm_max,
             "entmax": entmax}


def apply(operator: Operator, rows, *inputs):
    """The operator's forward on ``inputs`` and the mask of ``rows`` (a ``_layout.Rows``): the custom op while
    torch.compile/export traces, the eager Function otherwise (whose non-finite-score error ``rows`` makes
    precise)."""
    inputs = (*inputs, rows.valid)
    if torch.compiler.is_compiling():
        return operator.op(*inputs)
    try:
        return operator.eager.apply(*inputs)
    except NonFiniteRows as error:
        bad = error
    raise rows.non_finite_error(bad.rows)
