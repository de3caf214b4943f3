"""numba's ``njit`` with an on-disk cache that can never stop the library from importing or running.

``cache=True`` writes compiled kernels beside the package (``__pycache__``) or, when that is read-only, under
``~/.cache`` / ``NUMBA_CACHE_DIR``. Two places where that breaks a plain ``import attention``:

* a read-only install with a read-only HOME: numba raises ``RuntimeError: cannot cache function ...: no locator
  available`` at decoration time, i.e. on import. The kernel is then compiled without a disk cache (each process
  compiles it on first use, as with ``cache=False``);
* damaged cache files (a full disk, two processes, a copied folder): loading them raises ``EOFError`` or an
  unpickling error at the first call. A failed load is treated as a miss (the kernel is compiled again and the
  cache rewritten when it can be), a failed save is skipped.

And ``follow_torch_threads``, which every caller of a parallel CPU kernel runs first: numba's thread count
follows torch's.
"""

from __future__ import annotations

import threading

import numba
import torch


def njit(*args, **options):
    """``numba.njit``, same arguments; with ``cache=True`` the cache is used when it works and skipped when not."""
    if args and callable(args[0]):
        return njit(**options)(args[0])
    if not options.pop("cache", False):
        return numba.njit(*args, **options)

    def decorate(function):
        try:
            dispatcher = numba.njit(*args, cache=True, **options)(function)
        except RuntimeError as error:  # no writable cache location: compile on first use, every process
            if "cannot cache" not in str(error):
                raise
            return numba.njit(*args, **options)(function)
        dispatcher._cache = _GuardedCache(dispatcher._cache)
        return dispatcher

    return decorate


class _GuardedCache:
    """A numba function cache whose failures are misses: a damaged file is never an error of the library."""

    def __init__(self, cache):
        self._inner = cache

    def load_overload(self, sig, target_context):
        try:
            return self._inner.load_overload(sig, target_context)
        except Exception:  # EOFError, UnpicklingError, OSError...: compile instead
            return None

    def save_overload(self, sig, data):
        try:
            self._inner.save_overload(sig, data)
        except Exception:  # a read-only or full cache folder: the kernel works, uncached
            pass

    def __getattr__(self, name):  # cache_path, flush, enable/disable...: numba's own
        return getattr(self._inner, name)


_NUMBA_MAX_THREADS = numba.config.NUMBA_NUM_THREADS


_synced = threading.local()  # torch's thread count when this thread last set numba's (numba's count is per thread)


def follow_torch_threads():
    """Run the numba kernels on as many threads as torch uses (torch.set_num_threads is the one knob).

    Both may share one OpenMP runtime, where a numba launch with its own count would silently reset torch's.
    numba.get_num_threads takes two locks, slower than a small kernel: it is asked only when torch's count changed.
    """
    torch_threads = torch.get_num_threads()
    if getattr(_synced, "torch_threads", None) == torch_threads:
        return
    current = numba.get_num_threads()  # the first call starts numba's threads, which may reset OpenMP's count
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    wanted = max(1, min(torch_threads, _NUMBA_MAX_THREADS))
    if current != wanted:
        numba.set_num_threads(wanted)
    _synced.torch_threads = torch.get_num_threads()
