"""Input checks and the move from (any shape, any dim, any mask) to (rows, d) with valid entries in front.

Every mapping acts on 2-D float32/float64 rows plus a per-row count of valid entries; this module builds that
view with differentiable torch ops (movedim, reshape, gather) and maps the result back, so autograd sees through
it and the kernels never deal with strides, masks or half precision.

Checks that need a value from the tensors (nan/inf scores, a tensor gamma <= 0) cost a device-to-host sync on
a GPU, once per call. ``set_checks`` decides where they run: ``"auto"`` (default) checks CPU tensors, where it
costs nothing extra (the CPU kernels count non-finite scores as they read them), and skips other devices;
``True`` checks everywhere, ``False`` nowhere (a non-finite row then comes out as nan).
"""

import functools
import math
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _cpu
from ._numba import follow_torch_threads

_CHECK_MODES = ("auto", True, False)
_checks = "auto"


def set_checks(mode: bool | str) -> bool | str:
    """Where values are checked (nan/inf scores, gamma > 0, lam >= 0 for tensors): "auto" (CPU tensors only, the
    default), True (every device: one device-to-host sync per call on a GPU) or False. Returns the previous mode."""
    global _checks
    if mode not in _CHECK_MODES:
        raise ValueError(f"attention.set_checks: mode must be 'auto', True or False, got {mode!r}")
    previous, _checks = _checks, mode
    return previous


def on_host(device: torch.device) -> bool:
    """Whether a tensor lives in host memory, where reading a value costs no device-to-host sync (and where the
    numba CPU kernels run). Every such decision goes through here (the tests route CPU tensors down the device
    path by replacing it)."""
    return device.type == "cpu"


def checks_enabled(device: torch.device) -> bool:
    if _checks == "auto":
        return on_host(device)
    return bool(_checks)


def check_parameter(name: str, mapping: str, value, *, positive: bool, low=None, high=None, values=True):
    """A float, or a floating tensor (learnable: one value per row, head, ...), checked.

    ``positive``: > 0 (gamma) or >= 0 (lam); ``low``/``high``: an open/closed interval (low, high] instead (a tensor:
    > low only). ``values=False``: a tensor's values are left to the op that receives it (``_ops``). Under
    torch.compile no tensor value is read here (that would break the graph)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{mapping}: {name} must be a float or a floating-point tensor, got {value.dtype}")
        if values and checks_enabled(value.device) and not torch.compiler.is_compiling():
            check_tensor_parameter(name, mapping, value.detach(), positive=positive, low=low)
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{mapping}: {name} must be a number, got {value!r}") from None
    if value != value or abs(value) == math.inf:  # nan, inf (comparisons: torch.compile may make value a SymFloat)
        raise ValueError(f"{mapping}: {name} must be finite, got {value}")
    if low is not None:
        if not low < value <= high:
            raise ValueError(f"{mapping}: {name} must be in ({low:g}, {high:g}], got {value}")
        return value
    if positive and value <= 0:
        raise ValueError(f"{mapping}: {name} must be > 0, got {value} (it scales the regularizer: gamma > 0)")
    if not positive and value < 0:
        raise ValueError(f"{mapping}: {name} must be >= 0, got {value} (a negative penalty is not convex)")
    return value


# how each learnable parameter is kept in range ("exp(log_gamma)"), kept up to date by attention.registry (which
# imports this module, not the other way round)
LEARN_HINTS: dict[str, str] = {}


def _learn_as(name: str) -> str:
    return f"parametrize it as {LEARN_HINTS.get(name, 'softplus')} to learn it"


def check_tensor_parameter(name, mapping, value, *, positive, low=None):
    """A tensor parameter's values (one device-to-host sync off the CPU): finite, and > 0, >= 0 or > low."""
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{mapping}: {name} must be finite, got a tensor with nan/inf")
    if low is not None:
        if bool((value <= low).any()):
            raise ValueError(f"{mapping}: {name} must be > {low:g}, got a tensor with min {value.min().item():g} "
                             f"({_learn_as(name)})")
        return
    if positive and bool((value <= 0).any()):
        raise ValueError(f"{mapping}: {name} must be > 0, got a tensor with min {value.min().item():g} (it scales "
                         f"the regularizer: gamma > 0; {_learn_as(name)})")
    if not positive and bool((value < 0).any()):
        raise ValueError(f"{mapping}: {name} must be >= 0, got a tensor with min {value.min().item():g} (a negative "
                         f"penalty is not convex; {_learn_as(name)})")


@dataclass
class Rows:
    """(n, d) scores with each row's valid entries first, and how to put results back."""

    values: torch.Tensor  # (n, d), float32 or float64, contiguous
    lengths: torch.Tensor  # (n,), int64, on values.device
    shape: torch.Size  # scores' shape with `dim` moved last
    dim: int
    dtype: torch.dtype
    order: torch.Tensor | None  # (n, d) positions gathered into each row, or None when the mask is a prefix
    valid: torch.Tensor | None  # the mask, broadcast to (..., d), when the op orders the rows itself, else None
    source: torch.Tensor  # the scores, for error messages
    mask: torch.Tensor | None
    mapping: str

    def restore(self, rows: torch.Tensor) -> torch.Tensor:
        if self.order is not None:
            rows = scatter_back(rows, self.order)
        # (rows, d) scores along their last dim come back as they are: three view calls cost as much as a kernel
        # launch at small shapes
        if rows.shape != self.shape:
            rows = rows.reshape(self.shape)
        if self.dim != len(self.shape) - 1:
            rows = rows.movedim(-1, self.dim)
        return rows if rows.dtype == self.dtype else rows.to(self.dtype)

    def per_row(self, value, name: str):
        """A float as it is; a tensor broadcast to one value per row, (n,), or kept as a 0-d tensor."""
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return value
        target = list(self.shape[:-1])
        target.insert(self.dim, 1)  # the scores' shape with size 1 along dim
        try:
            expanded = value.to(self.values.device).broadcast_to(target)
        except RuntimeError:
            raise ValueError(
                f"{self.mapping}: {name} of shape {tuple(value.shape)} does not broadcast to one value per row, "
                f"i.e. to {tuple(target)} (scores of shape {tuple(self.source.shape)}, size 1 along dim={self.dim})"
            ) from None
        return expanded.movedim(self.dim, -1).reshape(-1)

    def scaled(self, gamma):
        """z = x / gamma, row by row; no copy for gamma = 1 (the division is then the identity)."""
        if isinstance(gamma, torch.Tensor):
            gamma = self.per_row(gamma, "gamma")
            return self.values / (gamma.unsqueeze(-1) if gamma.dim() else gamma).to(self.values.dtype)
        return self.values if gamma == 1.0 else self.values / gamma

    def non_finite_error(self, bad: int) -> ValueError:
        """The error for a kernel that met ``bad`` rows with nan/inf: the first bad index of the scores, or (the
        scores being finite) the overflow of scores / gamma."""
        try:
            check_finite(self.source, self.mask, self.mapping)
        except ValueError as error:
            return error
        return ValueError(
            f"{self.mapping}: scores / gamma overflow to inf in {bad} row(s) (scores of shape "
            f"{tuple(self.source.shape)}); use a larger gamma or smaller scores"
        )


def check_inputs(scores: torch.Tensor, dim: int, mask: torch.Tensor | None, mapping: str):
    """(dim in [0, scores.dim()), mask on the scores' device or None) after the checks every mapping makes. The
    mask has the scores' number of dims but keeps its sizes (it broadcasts to the scores'): a causal (T, T) mask is
    not expanded to the batch."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{mapping}: scores must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{mapping}: scores must be a floating-point tensor, got {scores.dtype}")
    if scores.dim() == 0:
        raise ValueError(f"{mapping}: scores must have at least one dimension, got a scalar")
    if not -scores.dim() <= dim < scores.dim():
        raise ValueError(f"{mapping}: dim={dim} is out of range for scores of shape {tuple(scores.shape)}")
    dim = dim % scores.dim()
    if scores.shape[dim] == 0 and scores.numel() == 0 and math.prod(scores.shape[:dim] + scores.shape[dim + 1:]):
        raise ValueError(f"{mapping}: scores of shape {tuple(scores.shape)} have no entry along dim={dim}: there is "
                         f"nothing to normalize over (a row needs at least one score; mask entries out instead)")

    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"{mapping}: mask must be a bool tensor (True = may receive attention), got {got}")
        if not torch.compiler.is_compiling():  # (torch.broadcast_shapes costs ~30 us a call in eager)
            fits = mask.dim() <= scores.dim() and all(
                m == s or m == 1 for m, s in zip(reversed(mask.shape), reversed(scores.shape)))
        else:
            try:
                fits = torch.broadcast_shapes(mask.shape, scores.shape) == scores.shape
            except RuntimeError:
                fits = False
        if not fits:
            raise ValueError(
                f"{mapping}: mask of shape {tuple(mask.shape)} does not broadcast to scores of shape "
                f"{tuple(scores.shape)}"
            )
        # leading size-1 dims (a view): the mask's dims then line up with the scores', dim included
        mask = mask.to(scores.device).reshape((1,) * (scores.dim() - mask.dim()) + tuple(mask.shape))
    return dim, mask


def to_rows(scores: torch.Tensor, dim: int, mask: torch.Tensor | None, mapping: str, *,
            for_op: bool = False) -> Rows:
    """The (rows, d) view. No value is checked here (that would be a sync on a GPU): see ``set_checks``.

    ``for_op``: the rows go to an op of ``_ops``, which can put a masked row's valid entries first itself. In a
    compiled graph on the host the rows then stay in the scores' order and ``valid`` carries the mask: the op reads
    it and gathers only where it is not a prefix."""
    dim, mask = check_inputs(scores, dim, mask, mapping)
    # every view call is skipped where it would change nothing: at small shapes they cost as much as the kernels
    moved = scores if dim == scores.dim() - 1 else scores.movedim(dim, -1)
    shape = moved.shape
    d = shape[-1]
    values = moved if moved.dim() == 2 else moved.reshape(math.prod(shape[:-1]), d)  # (not -1: 0 rows of 0)
    if values.dtype != torch.float64 and values.dtype != torch.float32:
        values = values.to(torch.float32)
    n = values.shape[0]
    order = valid = None
    if mask is None:
        lengths = full_lengths(n, d, scores.device)
    else:
        # Lengths and the prefix test on the mask as given, before broadcasting: a causal (T, T) mask shared by a
        # batch and its heads is read once, not once per (batch, head) row block.
        small = mask.movedim(dim, -1)
        prefix = None
        if (small.shape[-1] == d and math.prod(shape) >= NUMBA_MASK_ENTRIES and on_host(scores.device)
                and _values_readable(small)):
            # eager on the host: one numba pass over the mask as stored (a batch-broadcast causal mask, as
            # transformers passes it, is read once), for both the lengths and the prefix test
            lengths, prefix = stored_lengths(small)
        else:
            lengths = small.sum(-1) if small.shape[-1] == d else small[..., 0] * d
        lengths = lengths.expand(shape[:-1]).reshape(n)
        # On the CPU, a prefix mask (padding, causal) needs no gather, and finding out costs no sync. A compiled
        # graph cannot branch on values: there the op decides (``for_op``), or the gather always runs. Off the host
        # it always runs: deciding would be a device-to-host sync on every call.
        if for_op and on_host(scores.device) and torch.compiler.is_compiling():
            valid = small.expand(shape)  # a view: the op reads the mask as given
        elif (not on_host(scores.device) or torch.compiler.is_compiling()
              or not (_is_prefix(small) if prefix is None else prefix)):
            order = valid_first_order(small.expand(shape).reshape(n, d))
            values = values.gather(-1, order)
        mask = mask.expand(scores.shape)
    return Rows(values.contiguous(), lengths, shape, dim, scores.dtype, order, valid, scores, mask, mapping)


def full_lengths(n: int, d: int, device: torch.device) -> torch.Tensor:
    """(n,) int64 filled with d: the lengths of unmasked rows. Made once per shape (the kernels only read it)."""
    if torch.compiler.is_compiling():  # a graph makes its own, with no global state behind it
        return torch.full((n,), d, dtype=torch.int64, device=device)
    return _full_lengths(n, d, device)


@functools.lru_cache(maxsize=64)
def _full_lengths(n: int, d: int, device: torch.device) -> torch.Tensor:
    # made outside inference mode: an inference tensor could not be saved for a later backward
    with torch.inference_mode(False):
        return torch.full((n,), d, dtype=torch.int64, device=device)


# below these many entries (of the scores, or of the mask broadcast to them) a mask's lengths and prefix test, and
# its all-True test (NUMBA_ALL_ENTRIES), take torch's ops: a numba call and its views cost ~10-25 us of fixed time
# (one thread: lengths + prefix torch 32 / numba 33 us at 1024 entries, 42 / 26 at 4096, 159 / 46 at 65536;
# all() 7.5 / 10 us at 4096, 19 / 17 at 16384, 70 / 12 at 65536 for a batch-broadcast causal mask)
NUMBA_MASK_ENTRIES = 4096
NUMBA_ALL_ENTRIES = 16384


def stored(tensor: torch.Tensor) -> torch.Tensor:
    """The part of a (possibly broadcast) tensor that is stored: each dim of stride 0 (and size > 1) cut to size 1,
    which broadcasts back to ``tensor`` (``tensor.expand`` of it is ``tensor`` again, value for value)."""
    if 0 not in tensor.stride():
        return tensor
    return tensor[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in tensor.stride())]


def stored_lengths(valid: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(valid.sum(-1) as int64 of the shape of ``stored(valid)`` without its last dim, which broadcasts to
    ``valid.shape[:-1]``; _is_prefix(valid)) for a bool host tensor whose values can be read (eager, not traced):
    one pass of a numba kernel over the stored entries. The same values as torch's sum and shifted test, every
    call: nothing is cached (a mask edited in place between calls is read again)."""
    small = stored(valid)
    d = small.shape[-1]
    rows = math.prod(small.shape[:-1])
    lengths = torch.empty(small.shape[:-1], dtype=torch.int64)
    if rows == 0 or d == 0:
        return lengths.fill_(0), True
    flat = small.reshape(rows, d).contiguous()
    return lengths, bool(_cpu.mask_lengths(flat.view(torch.uint8).numpy(), lengths.view(rows).numpy()))


def all_true(mask: torch.Tensor) -> bool:
    """bool(mask.all()) for a bool host tensor. Where its values can be read (eager) and it is large enough
    (NUMBA_ALL_ENTRIES), one numba pass over its stored entries only, up to the first False (a causal mask stops at
    its first row); else torch's op (a traced graph records it)."""
    if not (mask.numel() >= NUMBA_ALL_ENTRIES and _values_readable(mask)):
        return bool(mask.all())
    small = stored(mask)
    return bool(_cpu.all_true(small.contiguous().view(-1).numpy())) if small.numel() else True


def _is_prefix(valid: torch.Tensor) -> bool:
    """Whether every row's valid entries come first: no masked entry is followed by a valid one."""
    return not bool((valid[..., 1:] & ~valid[..., :-1]).any())


def is_stored_prefix(valid: torch.Tensor) -> bool:
    """_is_prefix of a mask that may be a broadcast view, read as it is stored: a causal (T, T) mask broadcast to
    a batch is read once, not once per (batch, head). A large host mask whose values can be read: the numba pass
    of ``stored_lengths`` (as ``to_rows`` reads it), else torch's ops."""
    if valid.numel() >= NUMBA_MASK_ENTRIES and on_host(valid.device) and _values_readable(valid):
        return stored_lengths(valid)[1]
    return _is_prefix(stored(valid))


def valid_first_order(valid: torch.Tensor) -> torch.Tensor:
    """order[..., k] = the position that goes to slot k of a row of ``valid`` (d last): the valid ones first, each
    group in its original order (what a stable sort of the "is masked" flags gives), by counting instead of sorting.

    On the host one pass of a numba kernel (``_cpu.valid_first_order``): the torch ops below take ~50 ms on one
    thread for 4096 rows of 256 (each allocates and first touches an int64 copy), more than the kernels the order
    feeds. Off the host, and wherever the values cannot be read (a graph being traced), the torch ops: the same
    order."""
    if on_host(valid.device) and _values_readable(valid):
        follow_torch_threads()
        order = torch.empty(valid.shape, dtype=torch.int64)
        rows = math.prod(valid.shape[:-1])  # (not -1: 0 rows of 0)
        _cpu.valid_first_order(valid.reshape(rows, valid.shape[-1]).contiguous().numpy(),
                               order.view(rows, valid.shape[-1]).numpy())
        return order
    return _counted_order(valid)


def _values_readable(tensor: torch.Tensor) -> bool:
    """Whether a host tensor's values can be read by a kernel: not while torch.compile, torch.export or make_fx
    traces (fake or functional tensors, or real ones under a dispatch mode that records the ops)."""
    return (type(tensor) is torch.Tensor and not torch.compiler.is_compiling()
            and _get_current_dispatch_mode() is None)


def _counted_order(valid: torch.Tensor) -> torch.Tensor:
    """valid_first_order by torch ops, on any device and in traced graphs."""
    valid_i = valid.to(torch.int64)
    before_valid = valid_i.cumsum(-1) - valid_i  # valid entries before j
    before_masked = torch.arange(valid.shape[-1], device=valid.device) - before_valid  # masked entries before j
    slot = torch.where(valid, before_valid, valid_i.sum(-1, keepdim=True) + before_masked)
    positions = torch.arange(valid.shape[-1], device=valid.device).expand_as(slot)
    return torch.empty_like(slot).scatter_(-1, slot, positions)


def scatter_back(rows: torch.Tensor, order: torch.Tensor, *, permutation: bool = False) -> torch.Tensor:
    """Rows gathered by ``rows.gather(-1, order)`` put back in place: entry k of a row goes to position
    order[..., k]. A position that the order does not name is 0; ``permutation=True`` says the order names every
    one (as ``valid_first_order``'s does) and skips filling the zeros. Differentiable (the backward gathers)."""
    return (torch.empty_like(rows) if permutation else torch.zeros_like(rows)).scatter_(-1, order, rows)


def validate_scores(scores: torch.Tensor, mask: torch.Tensor | None, mapping: str) -> bool:
    """check_finite, with one reduction in the common case: a finite sum means every (unmasked) score is finite
    (nan and ±inf propagate); only a non-finite sum (or an overflow) pays for the full check. The sum runs over
    every score, masked or not (no masked copy of the scores): masked scores are finite too in nearly every
    model, and where they are not, the masked sum decides. Returns whether every score, masked or not, is finite
    (as far as the first sum tells: False may also be an overflow)."""
    if math.isfinite(scores.sum().item()):  # (the sum's value: torch.isfinite of a 0-dim tensor is 4 more ops)
        return True
    if mask is None or not math.isfinite(torch.where(mask, scores, 0).sum().item()):
        check_finite(scores, mask, mapping)
    return False


def check_finite(scores: torch.Tensor, mask: torch.Tensor | None, mapping: str) -> None:
    bad = ~torch.isfinite(scores)
    if mask is not None:
        bad &= mask
    if bool(bad.any()):
        where = torch.nonzero(bad)
        first = tuple(where[0].tolist())
        kind = "nan" if torch.isnan(scores[first]) else "inf"
        raise ValueError(
            f"{mapping}: scores contain {kind} at index {first} ({len(where)} non-finite unmasked entries in "
            f"scores of shape {tuple(scores.shape)}); fix the model or mask those positions out"
        )
