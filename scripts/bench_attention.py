"""Forward + backward time of the attention mappings, against torch.softmax, entmax and the authors' per-row loop.

    python scripts/bench_attention.py                 # what `make bench` runs
    python scripts/bench_attention.py --quick         # fewer repeats, a smoke run
    python scripts/bench_attention.py --clock both    # also wall clock with the default threads
    python scripts/bench_attention.py --authors port  # skip building the authors' package

For every size (rows x d, float32) and every method, one timed call is ``y = f(x); y.backward(g)`` with a fixed
random ``g``. Each method is warmed up first (numba compiles, or loads its cache, on the first call); the timed
calls then run round-robin, one call of each method per round in a rotating order, so that load from other
processes on the machine falls on all methods alike. Reported: the median over rounds, in ms, and the ratio to
``torch.softmax`` (forward + backward) measured in the same rounds. By default the measurement uses the CPU time
of the main thread (``time.thread_time``) with torch and numba on one thread, so that all the work runs on that
thread: what to trust on a shared, loaded machine, where waiting for a time slice inflates wall times (and
multi-threaded parallel regions most). ``--clock both`` adds a wall-clock run with the default threads first.
The sizes: 1920x50 (a batch of short sentences), 256x1000 (long rows), 32768x64 (a Transformer-sized score
tensor, e.g. batch 8 x 8 heads x 512 queries over 64 keys). Two more measurements on the CPU clock, one thread:
the row-length sweep (64..4096 keys, 262,144 scores per call) and a causal-masked 8 x 512 x 512 block (a
decoder's self-attention: one (512, 512) lower-triangular bool mask for the batch), every mapping against
``torch.softmax`` of the scores with -inf at the masked entries (``--no-sweep``, ``--no-causal`` skip them).

The authors' baseline ("authors ...") is Niculae & Blondel's own package, ``torchsparseattn`` 0.2 from PyPI
(github.com/vene/sparse-structured-attention), Cython extensions built from its sdist into a cache directory
outside the repository. Its autograd Functions are legacy ones (non-static ``forward``), which torch >= 1.5
refuses to call, so a small new-style Function below replays their ``_BaseBatchProjection`` loop: a Python
loop over rows calling their unchanged per-row ``project`` in the forward and ``project_jv`` in the backward;
fusedmax/oscarmax are their prox Function followed by their sparsemax Function, as in their ``Fusedmax`` and
``Oscarmax`` modules. If the package cannot be built (no compiler, no network), ``--authors port`` (or the
automatic fallback) times the same loop over a port of their per-row routines, with their Cython kernels
replaced by numba ones called once per row; the output says which one ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numba
import numpy as np
import torch

import attention

ROOT = Path(__file__).resolve().parents[1]

SIZES = [(1920, 50), (256, 1000), (32768, 64)]
# the row-length sweep: Transformer-like rows of 64..4096 keys, 262,144 scores per call (issue 27)
SWEEP_SCORES = 262144
SWEEP_KEYS = [64, 128, 256, 512, 1024, 2048, 4096]
SWEEP_METHODS = ["torch.softmax", "sparsemax", "fusedmax", "oscarmax", "entmax (1.5)"]
SWEEP_TARGETS = {"sparsemax": 2.0, "fusedmax": 3.5, "oscarmax": 5.0}  # x torch.softmax at every row length
CAUSAL_SHAPE = (8, 512, 512)  # batch x queries x keys: a decoder's self-attention block under a causal mask
CAUSAL_METHODS = ["torch.softmax", "softmax", "sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax (1.5)",
                  "entmax (1.3)"]
CAUSAL_TARGET = 1.5  # x masked torch.softmax, every mapping
AUTHORS_MAX_ROWS = 2048  # their loop calls Python once per row: at 32768 rows one call takes seconds (not timed)
TARGETS = {"sparsemax": 3.0, "fusedmax": 6.0, "oscarmax": 8.0}  # x torch.softmax, one thread, every size
FUSED_LAM = 0.1  # attention.fusedmax's default; the authors' FusedProxFunction(alpha=0.1)
OSCAR_LAM = 0.01  # attention.oscarmax's default; the authors' OscarProxFunction(beta=0.01)
AUTHORS_VERSION = "0.2"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "structured-attention"
OUT = ROOT / "results" / "bench" / "attention.json"


# ---------------------------------------------------------------------------------------------------------------
# The authors' package: fetch the sdist, build its Cython extensions in place, import it from there.


def _build_authors(log) -> Path:
    """Download torchsparseattn's sdist from PyPI and build it in place under CACHE; return the source dir."""
    src = CACHE / f"torchsparseattn-{AUTHORS_VERSION}"
    built = list((src / "torchsparseattn").glob("_fused.*.so")) if src.exists() else []
    if built:
        return src
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"building the authors' torchsparseattn {AUTHORS_VERSION} under {CACHE} (once) ...")
    meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/torchsparseattn/json", timeout=60))
    sdist = next(f for f in meta["releases"][AUTHORS_VERSION] if f["packagetype"] == "sdist")
    archive = CACHE / sdist["filename"]
    urllib.request.urlretrieve(sdist["url"], archive)
    shutil.unpack_archive(archive, CACHE)
    cython = CACHE / "cython"
    if not (cython / "Cython").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(cython), "cython"],
                       check=True)
    env = dict(os.environ, PYTHONPATH=str(cython))
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=src, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return src


def _import_authors(log):
    try:
        import torchsparseattn  # an installed copy, if there is one

        return torchsparseattn
    except ImportError:
        pass
    src = _build_authors(log)
    sys.path.insert(0, str(src))
    import torchsparseattn

    return torchsparseattn


class _AuthorsRows(torch.autograd.Function):
    """The authors' ``_BaseBatchProjection`` loop (base.py), as a new-style Function around their row methods."""

    @staticmethod
    def forward(ctx, x, proj):
        y = x.new_zeros(x.shape)
        for i in range(x.shape[0]):  # no lengths: every row has max_dim entries
            y[i, :] = proj.project(x[i, :])
        ctx.proj = proj
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dout):
        (y,) = ctx.saved_tensors
        din = dout.new_zeros(y.shape)
        for i in range(y.shape[0]):
            din[i, :] = ctx.proj.project_jv(dout[i, :], y[i, :])
        return din, None


class _PortSparsemax:
    """Their sparsemax.py: sort-based simplex projection and support-centred gradient, one row at a time."""

    def project(self, v):
        v_sorted, _ = torch.sort(v, dim=0, descending=True)
        cssv = torch.cumsum(v_sorted, dim=0) - 1
        ind = torch.arange(1, 1 + len(v)).to(dtype=v.dtype)
        cond = v_sorted - cssv / ind > 0
        rho = ind.masked_select(cond)[-1]
        tau = cssv.masked_select(cond)[-1] / rho
        return torch.clamp(v - tau, min=0)

    def project_jv(self, dout, y):
        supp = y > 0
        masked = dout.masked_select(supp)
        masked -= masked.sum() / supp.to(dtype=dout.dtype).sum()
        out = dout.new_zeros(dout.size())
        out[supp] = masked
        return out


@numba.njit(cache=False)
def _port_fused_jv(y_hat, dout):
    # their _fused_jv.pyx: average dout over each run of equal y_hat, in place
    n = dout.shape[0]
    last = 0
    acc = dout[0]
    count = 1
    for i in range(1, n + 1):
        if i == n or y_hat[i] != y_hat[i - 1]:
            for j in range(last, i):
                dout[j] = acc / count
            if i < n:
                last = i
                acc = dout[i]
                count = 1
        else:
            acc += dout[i]
            count += 1


class _PortFusedProx:
    """Their fused.py FusedProxFunction: numpy copy + Condat's prox_tv1d (numba, one call per row)."""

    def __init__(self, alpha):
        self.alpha = alpha

    def project(self, x):
        from attention import _cpu

        x_np = x.detach().numpy().copy()
        out = np.empty_like(x_np)
        _cpu._tv_prox_row(x_np, out, np.empty(len(x_np), np.int64), len(x_np), self.alpha)
        return torch.from_numpy(out)

    def project_jv(self, dout, y_hat):
        dout = dout.clone()
        _port_fused_jv(y_hat.detach().numpy(), dout.numpy())
        return dout


class _PortOscarProx:
    """Their oscar.py OscarProxFunction: numpy OWL prox (sort, isotonic regression, clip), np.unique backward."""

    def __init__(self, beta):
        self.beta = beta

    def project(self, x):
        from attention import _cpu

        v = x.detach().numpy().copy()
        w = np.arange(len(v) - 1, -1, -1, dtype=np.float32) * self.beta
        v_abs = np.abs(v)
        ix = np.argsort(v_abs)[::-1]
        fit = np.empty_like(v_abs)
        _cpu._pav_decreasing_row(np.ascontiguousarray(v_abs[ix] - w), fit, np.empty(len(v), np.int64), len(v))
        np.clip(fit, 0, np.inf, fit)
        inv_ix = np.zeros_like(ix)
        inv_ix[ix] = np.arange(len(v))
        return torch.from_numpy(np.sign(v) * fit[inv_ix])

    def project_jv(self, dout, y_hat):
        y_hat = y_hat.detach().numpy()
        din = dout.clone().zero_()
        sign = np.sign(y_hat)
        uniq, inv, counts = np.unique(np.abs(y_hat), return_inverse=True, return_counts=True)
        tmp = np.zeros((len(uniq),), dtype=y_hat.dtype)
        np.add.at(tmp, inv, dout.numpy() * sign)
        tmp /= counts
        tmp.take(inv, mode="clip", out=din.numpy())
        din.numpy()[:] *= sign
        return din


def authors_methods(kind: str, log):
    """(description, {name: f}) for the authors' sparsemax, fusedmax and oscarmax."""
    if kind in ("auto", "package"):
        try:
            import warnings

            tsa = _import_authors(log)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "should not be instantiated": we only call their row methods
                sparsemax, fused, oscar = (tsa.SparsemaxFunction(), tsa.FusedProxFunction(alpha=FUSED_LAM),
                                           tsa.OscarProxFunction(beta=OSCAR_LAM))
            where = Path(tsa.__file__).parent
            desc = (f"torchsparseattn {getattr(tsa, '__version__', '?')} (the authors' package, Cython built from "
                    f"the PyPI sdist, {where}); their per-row project/project_jv methods driven by their "
                    "_BaseBatchProjection loop, replayed in a new-style autograd Function")
        except Exception as error:  # noqa: BLE001 -- any build/import failure falls back to the port
            if kind == "package":
                raise
            log(f"could not build/import torchsparseattn ({type(error).__name__}: {error}); using the port")
            kind = "port"
    if kind == "port":
        sparsemax, fused, oscar = _PortSparsemax(), _PortFusedProx(FUSED_LAM), _PortOscarProx(OSCAR_LAM)
        desc = ("a port of torchsparseattn 0.2's per-row loop: their Python loop over rows, torch sort-based "
                "sparsemax per row, numpy OWL prox per row, with their Cython prox_tv1d / isotonic / fused-jv "
                "kernels replaced by numba kernels called once per row")

    def rows(x, proj):
        return _AuthorsRows.apply(x, proj)

    return desc, {
        "authors sparsemax": lambda x: rows(x, sparsemax),
        "authors fusedmax": lambda x: rows(rows(x, fused), sparsemax),
        "authors oscarmax": lambda x: rows(rows(x, oscar), sparsemax),
    }


# ---------------------------------------------------------------------------------------------------------------


def our_methods():
    import entmax

    return {
        "torch.softmax": lambda x: torch.softmax(x, dim=-1),
        "softmax": lambda x: attention.softmax(x),
        "sparsemax": lambda x: attention.sparsemax(x),
        "fusedmax": lambda x: attention.fusedmax(x, lam=FUSED_LAM),
        "oscarmax": lambda x: attention.oscarmax(x, lam=OSCAR_LAM),
        "sq_pnorm_max": lambda x: attention.sq_pnorm_max(x, p=1.5),
        "entmax (1.5)": lambda x: attention.entmax(x, alpha=1.5),
        "entmax (1.3)": lambda x: attention.entmax(x, alpha=1.3),
        "entmax.sparsemax": lambda x: entmax.sparsemax(x, dim=-1),
        "entmax.entmax15": lambda x: entmax.entmax15(x, dim=-1),
    }


CLOCK = time.perf_counter  # set by run(): perf_counter, or thread_time for the CPU-time clock


def step(f, x, g):
    x.grad = None
    t0 = CLOCK()
    f(x).backward(g)
    return CLOCK() - t0


def bench_size(n, d, fast, slow, rounds, slow_rounds, seed=0):
    if n > AUTHORS_MAX_ROWS:
        slow = {}
    return bench_shape((n, d), fast, slow, rounds, slow_rounds, seed)


def bench_shape(shape, fast, slow, rounds, slow_rounds, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float32).requires_grad_()
    g = torch.randn(*shape, generator=gen, dtype=torch.float32)
    methods = {**fast, **slow}
    for f in fast.values():  # warm-up: compile / load numba caches, fill allocator pools
        for _ in range(3):
            step(f, x, g)
    for f in slow.values():
        step(f, x, g)
    times = {name: [] for name in methods}
    names = list(methods)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name in slow and len(times[name]) >= slow_rounds:
                continue
            times[name].append(step(methods[name], x, g))
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}, {n: len(ts) for n, ts in times.items()}


def machine_info():
    info = {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def run(clock, threads, fast, slow, rounds, slow_rounds, authors_desc, log, sizes=SIZES):
    """Time every method at every size with one clock; the printed lines and the JSON record."""
    global CLOCK
    CLOCK = time.thread_time if clock == "cpu" else time.perf_counter
    if threads:
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
    info = machine_info()
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        pass
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    for n, d in sizes:
        log(f"[{clock} clock, {info['torch_threads']} threads] {n}x{d} ...")
        ms, counts = bench_size(n, d, fast, slow, rounds, slow_rounds)
        results.append({"rows": n, "d": d, "ms": ms, "timed_calls": counts})
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["loadavg_before"], info["loadavg_after"] = load_before, load_after
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        pass
    loaded = bool(load_before) and max(load_before[0], load_after[0]) > info["cpu_count"]

    names = list(fast) + list(slow)
    what = ("wall-clock time" if clock == "wall" else
            "CPU time of the one working thread (time.thread_time; hardly affected by other processes)")
    lines = [
        f"== {what}: torch {info['torch']} ({info['torch_threads']} threads), numba {info['numba']} "
        f"({info['numba_threads']} threads, {info.get('numba_threading_layer', '?')})",
        f"   load average before/after: {_fmt_load(load_before)} / {_fmt_load(load_after)}"
        + ("  -- LOADED: more runnable processes than CPUs; wall times are inflated and noisy"
           if loaded and clock == "wall" else ""),
        "",
        "ratio to torch.softmax (forward + backward; absolute ms in brackets)",
    ]
    widths = [max(len(x) for x in names + ["method"])] + [22] * len(sizes)
    header = ["method"] + [f"{n}x{d}" for n, d in sizes]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for name in names:
        cells = [name.ljust(widths[0])]
        for res in results:
            if name not in res["ms"]:
                cells.append("       -  (not timed)".ljust(widths[1]))
                continue
            ms = res["ms"][name]
            cells.append(f"{ms / res['ms']['torch.softmax']:8.2f}x ({ms:9.3f} ms)".ljust(widths[1]))
        lines.append("  ".join(cells).rstrip())

    targets = []
    for res in results:
        size = f"{res['rows']}x{res['d']}"
        ms = res["ms"]
        checks = [(f"{m} <= {bound:g}x torch.softmax", ms[m] / ms["torch.softmax"], bound)
                  for m, bound in TARGETS.items()]
        checks.append(("sparsemax <= 1.0x entmax.sparsemax", ms["sparsemax"] / ms["entmax.sparsemax"], 1.0))
        if "authors sparsemax" in ms and (res["rows"], res["d"]) == (1920, 50):
            for m in ("sparsemax", "fusedmax", "oscarmax"):
                checks.append((f"{m} >= 50x faster than authors {m}", ms[m] / ms[f"authors {m}"], 1 / 50))
        for label, value, bound in checks:
            targets.append({"size": size, "target": label, "value": value, "bound": bound, "met": value <= bound})
    lines += ["", "targets"]
    for t in targets:
        shown = f"{1 / t['value']:.0f}x faster" if "faster" in t["target"] else f"{t['value']:.2f}x"
        lines.append(f"  {'met   ' if t['met'] else 'MISSED'} {t['size']:>9}  {t['target']:<44} {shown}")
    record = {
        "clock": clock,
        "machine": info,
        "results": [
            {**res, "ratio_to_torch_softmax": {k: v / res["ms"]["torch.softmax"] for k, v in res["ms"].items()}}
            for res in results
        ],
        "targets": targets,
    }
    return lines, record


def sweep(fast, rounds, log):
    """The row-length sweep on the CPU clock, one thread: SWEEP_SCORES scores per call as (rows, keys)."""
    global CLOCK
    CLOCK = time.thread_time
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    methods = {name: fast[name] for name in SWEEP_METHODS}
    results = []
    for d in SWEEP_KEYS:
        log(f"[row-length sweep] {SWEEP_SCORES // d}x{d} ...")
        ms, counts = bench_size(SWEEP_SCORES // d, d, methods, {}, rounds, 0)
        results.append({"rows": SWEEP_SCORES // d, "d": d, "ms": ms, "timed_calls": counts,
                        "ratio_to_torch_softmax": {k: v / ms["torch.softmax"] for k, v in ms.items()}})
    targets = [{"size": f"{r['rows']}x{r['d']}", "target": f"{m} <= {bound:g}x torch.softmax",
                "value": r["ratio_to_torch_softmax"][m], "bound": bound,
                "met": r["ratio_to_torch_softmax"][m] <= bound}
               for r in results for m, bound in SWEEP_TARGETS.items()]
    lines = ["", f"row-length sweep ({SWEEP_SCORES} scores per call, CPU clock, 1 thread): ratio to torch.softmax",
             "method".ljust(14) + "".join(f"{d:>10}" for d in SWEEP_KEYS)]
    for name in SWEEP_METHODS:
        lines.append(name.ljust(14) + "".join(f"{r['ratio_to_torch_softmax'][name]:9.2f}x" for r in results))
    lines += [f"  {'met   ' if t['met'] else 'MISSED'} {t['size']:>9}  {t['target']}  {t['value']:.2f}x"
              for t in targets]
    return lines, {"clock": "cpu", "machine": machine_info(), "results": results, "targets": targets}


def causal_methods(mask):
    """Every mapping under a bool mask (True = may attend), and torch.softmax with -inf at the masked scores."""
    import entmax  # noqa: F401 - our_methods' import: fail here as there when it is missing

    blocked = ~mask
    methods = {name: f for name, f in our_methods().items() if name in CAUSAL_METHODS}
    methods["torch.softmax"] = lambda x: torch.softmax(x.masked_fill(blocked, -torch.inf), dim=-1)
    params = {"softmax": {}, "sparsemax": {}, "fusedmax": {"lam": FUSED_LAM}, "oscarmax": {"lam": OSCAR_LAM},
              "sq_pnorm_max": {"p": 1.5}, "entmax (1.5)": {"alpha": 1.5}, "entmax (1.3)": {"alpha": 1.3}}
    for name, kw in params.items():
        fn = attention.MAPPINGS[name.split(" ")[0]]
        methods[name] = lambda x, fn=fn, kw=kw: fn(x, mask=mask, **kw)
    return {name: methods[name] for name in CAUSAL_METHODS}


def causal(rounds, log, shape=CAUSAL_SHAPE):
    """A causal-masked block (batch x queries x keys, one (queries, keys) mask for the batch) on the CPU clock, one
    thread: every mapping against masked torch.softmax."""
    global CLOCK
    CLOCK = time.thread_time
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    log(f"[causal mask] {'x'.join(map(str, shape))} ...")
    mask = torch.ones(shape[-2], shape[-1], dtype=torch.bool).tril()
    ms, counts = bench_shape(shape, causal_methods(mask), {}, rounds, 0)
    ratio = {k: v / ms["torch.softmax"] for k, v in ms.items()}
    targets = [{"size": "x".join(map(str, shape)), "target": f"{m} <= {CAUSAL_TARGET:g}x masked torch.softmax",
                "value": ratio[m], "bound": CAUSAL_TARGET, "met": ratio[m] <= CAUSAL_TARGET}
               for m in CAUSAL_METHODS if m != "torch.softmax"]
    lines = ["", f"causal mask ({'x'.join(map(str, shape))}, CPU clock, 1 thread): ratio to masked torch.softmax"]
    lines += [f"  {'met   ' if t['met'] else 'MISSED'} {m:<14} {ms[m]:8.2f} ms  {ratio[m]:.2f}x"
              for m, t in zip(CAUSAL_METHODS[1:], targets)]
    return lines, {"clock": "cpu", "shape": list(shape), "mask": "causal (tril), one (queries, keys) mask",
                   "machine": machine_info(), "ms": ms, "timed_calls": counts, "ratio_to_torch_softmax": ratio,
                   "target": CAUSAL_TARGET, "targets": targets}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (a smoke run)")
    parser.add_argument("--authors", choices=["auto", "package", "port", "none"], default="auto")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per size (default 40; quick 5)")
    parser.add_argument("--slow-rounds", type=int, default=None, help="timed calls of the authors' loops (5)")
    parser.add_argument("--clock", choices=["both", "wall", "cpu"], default="cpu",
                        help="cpu (default): CPU time of the main thread with torch and numba on 1 thread (all work "
                             "then runs on it), which load from other processes barely changes; wall: elapsed time "
                             "with the default threads; both: wall, then cpu")
    parser.add_argument("--sizes", type=_sizes, default=SIZES,
                        help="rows x d, comma-separated (default: 1920x50,256x1000,32768x64); small ones such as "
                             "8x10,64x50 show the per-call overhead")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the row-length sweep (64..4096 keys, 262,144 scores per call)")
    parser.add_argument("--no-causal", action="store_true",
                        help="skip the causal-masked block (8 x 512 x 512, every mapping against masked softmax)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 40)
    slow_rounds = args.slow_rounds or (2 if args.quick else 5)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    fast = our_methods()
    authors_desc, slow = ("not measured", {}) if args.authors == "none" else authors_methods(args.authors, log)
    clocks = ["wall", "cpu"] if args.clock == "both" else [args.clock]
    out_lines = [
        f"forward+backward (y = f(x); y.backward(g)), float32, standard-normal scores; median of {rounds} "
        f"round-robin rounds ({slow_rounds} for the authors' loops, up to {AUTHORS_MAX_ROWS} rows); fusedmax "
        f"lam={FUSED_LAM}, oscarmax lam={OSCAR_LAM} (exact), sq_pnorm_max p=1.5, entmax alpha 1.5 (sort-based) "
        "and 1.3 (Newton)",
        f"machine: {os.cpu_count()} CPUs, {machine_info().get('cpu_model', platform.machine())}",
        f"authors = {authors_desc}",
    ]
    records = []
    for clock in clocks:
        lines, record = run(clock, 1 if clock == "cpu" else None, fast, slow, rounds, slow_rounds, authors_desc, log,
                            args.sizes)
        out_lines += [""] + lines
        records.append(record)
    row_lengths = None
    if not args.no_sweep:
        lines, row_lengths = sweep(fast, rounds, log)
        out_lines += lines
    causal_block = None
    if not args.no_causal:
        lines, causal_block = causal(rounds, log)
        out_lines += lines
    print("\n".join(out_lines))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "what": "forward+backward time (ms), median over round-robin rounds; ratio = time / torch.softmax",
        "dtype": "float32",
        "params": {"fusedmax_lam": FUSED_LAM, "oscarmax_lam": OSCAR_LAM, "oscarmax_variant": "exact",
                   "sq_pnorm_max_p": 1.5, "entmax_alpha": [1.5, 1.3],
                   "gamma": 1.0, "scores": "standard normal, seed 0", "grad": "standard normal"},
        "targets": {f"{m}_x_torch_softmax": bound for m, bound in TARGETS.items()},
        "rounds": rounds,
        "authors_rounds": slow_rounds,
        "authors_baseline": authors_desc,
        "runs": records,
    }
    if row_lengths is not None:
        payload["row_lengths"] = row_lengths
        payload["row_length_targets"] = {f"{m}_x_torch_softmax": bound for m, bound in SWEEP_TARGETS.items()}
    if causal_block is not None:
        payload["causal"] = causal_block
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def _sizes(text):
    try:
        return [tuple(int(v) for v in size.lower().split("x")) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes: rows x d, comma-separated (e.g. 1920x50,8x10), got {text!r}")


def _fmt_load(load):
    return "?" if load is None else " ".join(f"{v:.2f}" for v in load)


if __name__ == "__main__":
    main()
