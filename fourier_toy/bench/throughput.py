"""Training and evaluation throughput, benchmark "bench-v1" (DESIGN.md).

    fourier-toy bench [--vs-torch] [--configs S,M,L] [--backends numba,numpy] [--steps N] [--plot PATH.png]

Task: numbers 0..520 plus '+' and '=' (V = 523), examples [a, '+', b, '='] with a + b <= 520,
loss on the last position. Model: convention 3, untied unembedding, float32; AdamW lr 1e-3,
betas (0.9, 0.98), weight decay 0.01 (matrices only). Configs: S d_model 64, 2 layers, 4 heads,
batch 256; M 128, 2, 4, 512; L 256, 4, 8, 512.

Protocol: every backend (and PyTorch with --vs-torch) trains its own copy of one initial model.
After a warm-up, `rounds` rounds each time at least `steps` training steps and `min_seconds` of
them (forward, backward, AdamW), in calls of STEPS_PER_CALL steps, and one evaluation batch per
backend, each stretch after an idle `settle`, the backends taking turns in a rotating order, and
a large numpy matmul (the machine's float32 peak, with the same threads). Figures are medians
over the rounds, so a busy spell of the machine shifts one round, not the result.

Output: one JSON line per configuration and backend, and with --vs-torch one line per
configuration with the ratios ours / PyTorch; with --plot also a figure of it (plots.plot_bench,
which also draws a file of these lines). GFLOP/s count the matmul FLOPs the last-position
logits need (2mnk per product: every projection of the blocks before the last, the keys and
values of the last block at every position and the rest of it at the last position, the
attention products, the unembedding), times 3 for a training step; every backend is credited
with the same count, so their GFLOP/s compare like their examples/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from fourier_toy.errors import ConfigError

BENCH = "bench-v1"
P = 521  # numbers 0..520
CONFIGS = {  # name: (d_model, n_layers, n_heads, batch)
    "S": (64, 2, 4, 256),
    "M": (128, 2, 4, 512),
    "L": (256, 4, 8, 512),
}
BACKENDS = ("numba", "numpy")
N_CTX = 4
# Each timed call trains this many steps, on batches drawn once (as `train` does: GPT.train_steps).
STEPS_PER_CALL = 8


# ---- FLOPs -----------------------------------------------------------------------------------------

def forward_flops(d: int, n_layers: int, T: int = N_CTX, p: int = P) -> int:
    """Matmul FLOPs of one example's forward pass to the last-position number logits."""
    full = T * 2 * d * (3 * d + d + 4 * d + 4 * d) + 2 * (T * T * d * 2)  # projections, QK^T and PV
    last = T * 2 * d * 2 * d + 2 * d * (d + d + 4 * d + 4 * d) + 2 * (T * d * 2)
    return (n_layers - 1) * full + last + 2 * d * p


# ---- data ------------------------------------------------------------------------------------------

def batches(rng, batch: int, n: int):
    """n batches of bench-v1 examples: tokens (batch, 4) int64 and targets (batch,), a + b <= 520."""
    import numpy as np

    out = []
    for _ in range(n):
        a = rng.integers(0, P, size=4 * batch)
        b = rng.integers(0, P, size=4 * batch)
        keep = (a + b) < P
        a, b = a[keep][:batch], b[keep][:batch]  # about half the draws survive; 4x is plenty
        tokens = np.stack([a, np.full(batch, P), b, np.full(batch, P + 1)], axis=1).astype(np.int64)
        out.append((tokens, (a + b).astype(np.int64)))
    return out


# ---- the runners: one object per backend, with train(tokens, targets) and eval(tokens) ---------

class OurRunner:
    def __init__(self, name, gpt, backend):
        from fourier_toy.nn.optim import AdamW
        from fourier_toy.nn.params import decay_mask
        from fourier_toy.training.backends import update_rule

        self.name = name
        self.model = gpt
        self.opt = AdamW(gpt.layout.size, 1e-3, (0.9, 0.98), 1e-8, 0.01, decay_mask=decay_mask(gpt.layout),
                         update=update_rule(gpt))

    def train(self, tokens, targets):
        """Steps s = 0, 1, ... on tokens[s] (K, B, T) and targets[s] (K, B), as `train` takes them."""
        return self.model.train_steps(tokens, targets, self.opt)

    def eval(self, tokens):
        return self.model.forward(tokens)


class TorchRunner:
    def __init__(self, gpt, last_only: bool):
        from fourier_toy.bench import torch_twin as torch_model

        self.name = "torch-last-only" if last_only else "torch"
        self.tm = torch_model
        self.torch = torch_model.torch
        self.model = torch_model.TorchGPT(gpt, last_only=last_only)
        self.opt = torch_model.adamw(self.model)

    def train(self, tokens, targets):
        t = self.torch
        for s in range(len(tokens)):
            self.tm.train_step(self.model, self.opt, t.from_numpy(tokens[s]), t.from_numpy(targets[s]))

    def eval(self, tokens):
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(tokens)).numpy()


# ---- machine -----------------------------------------------------------------------------------------

def set_threads(n: int) -> None:
    """BLAS, OpenMP, numba (fast.limit_threads) and (when loaded) PyTorch threads for this process."""
    from fourier_toy.fast import limit_threads

    limit_threads(n, blas=n)
    if sys.modules.get("torch") is not None:
        sys.modules["torch"].set_num_threads(n)


def blas_description() -> tuple[str, list]:
    """('openblas 0.3.31 SkylakeX pthreads', [threadpoolctl records]) for numpy's BLAS."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl looks for)
    from threadpoolctl import threadpool_info

    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    text = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                     f"{i.get('threading_layer')}" for i in libs) or "unknown"
    return text, [{k: i.get(k) for k in ("filepath", "internal_api", "version", "architecture",
                                         "threading_layer", "num_threads")} for i in libs]


def matmul_peak(n: int = 2048, reps: int = 3) -> float:
    """The best GFLOP/s of `reps` float32 (n, n) @ (n, n) numpy matmuls (BLAS threads as set)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _sig(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant digits (measurements carry no more)."""
    return float(f"{x:.{digits}g}")


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[(n - 1) // 2] + xs[n // 2]) / 2 if n else None


# ---- the benchmark -----------------------------------------------------------------------------------

def run(configs=("S", "M", "L"), backends=BACKENDS, steps: int = 10, rounds: int = 5, warmup: int = 3,
        threads: int = 2, eval_batch: int = 2048, vs_torch: bool = False, torch_last_only: bool = False,
        seed: int = 0, emit=print, sizes: dict | None = None, peak_size: int = 2048,
        settle: float = 0.25, min_seconds: float = 0.5, warm: float = 0.1) -> list[dict]:
    """Run bench-v1 and emit one JSON line per configuration and backend (and ratio lines).

    settle: seconds of idle before each timed stretch, so that the spinning thread pools of
    whatever ran before (OpenBLAS after the peak matmul or the numpy backend, PyTorch's OpenMP)
    have gone to sleep and do not take a core from the backend being timed. min_seconds: each
    backend's timed stretch runs at least `steps` steps and at least about this long (judged from
    one step after the warm-up), since a few milliseconds of S are mostly noise. warm: seconds of
    untimed work of the same kind (training steps, evaluations) between the idle and each timed
    stretch: on a virtual machine the first 20-40 ms after an idle spell run 1.5-1.9x slower
    (host-side wake-up), which would otherwise land in the timed stretch. sizes: extra or
    replacement configurations name -> (d_model, n_layers, n_heads, batch), for tests; peak_size: the side of the square matmul that measures the peak. Returns the records.
    """
    table = {**CONFIGS, **(sizes or {})}
    for c in configs:
        if c not in table:
            raise ConfigError(f"--configs: unknown configuration {c!r}; allowed: {', '.join(table)}")
    for b in backends:
        if b not in BACKENDS:
            raise ConfigError(f"--backends: unknown backend {b!r}; allowed: {', '.join(BACKENDS)}")
    for name, value, lo in (("--steps", steps, 1), ("--rounds", rounds, 1), ("--warmup", warmup, 0),
                            ("--threads", threads, 1), ("--eval-batch", eval_batch, 1)):
        if not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name}: expected an integer >= {lo}, got {value!r}")
    for name, value in (("--settle", settle), ("--min-seconds", min_seconds), ("--warm-seconds", warm)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 60:
            raise ConfigError(f"{name}: expected seconds in [0, 60], got {value!r}")
    if vs_torch:
        from fourier_toy.bench import torch_twin as torch_model  # noqa: F401  (a clear ConfigError when PyTorch is missing)

    import numba
    import numpy as np

    from fourier_toy.config import RNG_INIT, ModelConfig
    from fourier_toy.training.backends import make_gpt

    set_threads(threads)
    blas_text, blas_libs = blas_description()
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
               "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    records = []
    for cname in configs:
        d, L, H, B = table[cname]
        rng = np.random.default_rng(seed)
        cfg = ModelConfig(d_model=d, n_layers=L, n_heads=H, n_ctx=N_CTX, tied=False)
        init = make_gpt(cfg, P, rng=np.random.default_rng([seed, RNG_INIT])).params
        runners = []
        for b in backends:
            c = ModelConfig(d_model=d, n_layers=L, n_heads=H, n_ctx=N_CTX, tied=False, backend=b)
            runners.append(OurRunner(b, make_gpt(c, P, params=init.copy()), b))
        if vs_torch:
            runners.append(TorchRunner(make_gpt(cfg, P, params=init.copy()), last_only=torch_last_only))
        K = STEPS_PER_CALL
        train_data = batches(rng, B, K)
        (eval_tokens, _), = batches(rng, eval_batch, 1)
        toks, tgs = (np.stack(a) for a in zip(*train_data))  # (K, B, T), (K, B): one call's steps
        n_steps = {}
        for r in runners:
            for i in range(warmup):
                r.train(toks[i % K][None], tgs[i % K][None])
            r.eval(eval_tokens)
            t0 = time.perf_counter()
            r.train(toks, tgs)
            per_step = (time.perf_counter() - t0) / K
            n_steps[r.name] = K * math.ceil(max(steps, min_seconds / per_step) / K)  # whole calls
        train_rate = {r.name: [] for r in runners}
        eval_rate = {r.name: [] for r in runners}
        peaks = []
        for rnd in range(rounds):
            order = runners[rnd % len(runners):] + runners[: rnd % len(runners)]
            for r in order:
                time.sleep(settle)
                _keep_busy(lambda: r.train(toks[:1], tgs[:1]), warm)
                t0 = time.perf_counter()
                for _ in range(n_steps[r.name] // K):
                    r.train(toks, tgs)
                train_rate[r.name].append(n_steps[r.name] * B / (time.perf_counter() - t0))
                time.sleep(settle)
                _keep_busy(lambda: r.eval(eval_tokens), warm)
                t0 = time.perf_counter()
                r.eval(eval_tokens)
                eval_rate[r.name].append(eval_batch / (time.perf_counter() - t0))
            peaks.append(matmul_peak(peak_size))
        peak = _median(peaks)
        fwd = forward_flops(d, L)
        common = {"bench": BENCH, "config": cname, "d_model": d, "n_layers": L, "n_heads": H, "batch": B,
                  "eval_batch": eval_batch, "rounds": rounds, "steps_per_call": K, "settle_s": settle, "warm_s": warm,
                  "threads": threads,
                  "gflop_per_example_train": 3 * fwd / 1e9, "gflop_per_example_eval": fwd / 1e9,
                  "peak_gflops": _sig(peak), "peak_gflops_rounds": [_sig(x) for x in peaks],
                  "blas": blas_text, "blas_libs": blas_libs}
        by_name = {}
        for r in runners:
            tr, ev = _median(train_rate[r.name]), _median(eval_rate[r.name])
            rec = {**common, "backend": r.name, "steps_per_round": n_steps[r.name],
                   "train_examples_per_s": _sig(tr), "train_step_ms": _sig(1e3 * B / tr),
                   "train_examples_per_s_rounds": [_sig(x) for x in train_rate[r.name]],
                   "eval_examples_per_s": _sig(ev),
                   "eval_examples_per_s_rounds": [_sig(x) for x in eval_rate[r.name]],
                   "train_gflops": _sig(tr * 3 * fwd / 1e9), "eval_gflops": _sig(ev * fwd / 1e9),
                   "frac_peak": _sig(tr * 3 * fwd / 1e9 / peak, 3)}
            if isinstance(r, TorchRunner):
                torch = r.torch
                rec.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                            "torch_last_only": torch_last_only})
            else:
                rec.update({"numba": numba.__version__, "numba_threads": numba.get_num_threads(),
                            "numba_threading_layer": _threading_layer()})
            rec["machine"] = {**machine, "load_avg_end": [round(x, 2) for x in os.getloadavg()]}
            by_name[r.name] = rec
            records.append(rec)
            emit(json.dumps(rec))
        if vs_torch:
            tname = "torch-last-only" if torch_last_only else "torch"
            ratio = {"bench": BENCH, "config": cname, "ratio": f"ours/{tname}", "threads": threads}
            for b in backends:
                ratio[b] = {"train": _sig(by_name[b]["train_examples_per_s"] / by_name[tname]["train_examples_per_s"], 3),
                            "eval": _sig(by_name[b]["eval_examples_per_s"] / by_name[tname]["eval_examples_per_s"], 3)}
            records.append(ratio)
            emit(json.dumps(ratio))
    return records


def _keep_busy(fn, seconds: float) -> None:
    """Calls fn until `seconds` have passed (not at all for 0)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()


def _threading_layer() -> str:
    """numba's parallel threading layer if one has started, else the configured choice."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return f"not started (config: {numba.config.THREADING_LAYER})"


# ---- command line ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fourier-toy bench` (no heavy imports here)."""
    parser.add_argument("--configs", default="S,M,L", help="comma-separated: S, M, L (default all)")
    parser.add_argument("--backends", default="numba,numpy", help="comma-separated: numba, numpy")
    parser.add_argument("--vs-torch", action="store_true", help="also run the same model in PyTorch eager")
    parser.add_argument("--torch-last-only", action="store_true",
                        help="give the PyTorch model the last-block shortcut too (like-for-like FLOPs)")
    parser.add_argument("--steps", type=int, default=10,
                        help=f"at least this many training steps per round and backend, in whole calls of "
                             f"{STEPS_PER_CALL} (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; figures are medians over them (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every backend (default 2)")
    parser.add_argument("--eval-batch", type=int, default=2048, help="examples per evaluation batch (default 2048)")
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="each timed stretch runs at least about this long (default 0.5)")
    parser.add_argument("--settle", type=float, default=0.25,
                        help="seconds idle before each timed stretch, so other thread pools sleep (default 0.25)")
    parser.add_argument("--plot", metavar="PATH.png", default=None,
                        help="also draw the run's examples/s per configuration and backend to this PNG")
    parser.add_argument("--warm-seconds", type=float, default=0.1,
                        help="seconds of untimed work between the idle and each timed stretch (default 0.1)")


def cmd_bench(args) -> int:
    """Entry point for `fourier-toy bench` (args from add_arguments)."""
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    plot = args.plot
    if plot is not None:
        _check_plot_path(plot)  # before minutes of measuring, not after
    records = run(configs=split(args.configs), backends=split(args.backends), steps=args.steps, rounds=args.rounds,
                  warmup=args.warmup, threads=args.threads, eval_batch=args.eval_batch, vs_torch=args.vs_torch,
                  torch_last_only=args.torch_last_only, settle=args.settle, min_seconds=args.min_seconds,
                  warm=args.warm_seconds)
    if plot is not None:
        from fourier_toy.analysis.plots import plot_bench

        print(f"plot: {plot_bench(records, plot)}", file=sys.stderr)  # stdout stays JSON lines
    return 0


def _check_plot_path(path) -> None:
    """A ConfigError unless `path` names a .png file in an existing directory."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ConfigError(f"--plot: expected a path ending in .png, got {str(path)!r}")
    if p.is_dir() or not p.parent.resolve().is_dir():
        raise ConfigError(f"--plot: {str(path)!r} is not a file in an existing directory")


def main(argv=None) -> int:
    """`python scripts/bench.py ...`: the same as `fourier-toy bench ...`."""
    from fourier_toy.errors import FourierToyError

    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_bench(args)
    except FourierToyError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
