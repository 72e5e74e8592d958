"""Measure what the tolerances of ``assertions.py`` rest on: ``python -m fourier_toy.testing.calibrate``.

Each measurement draws models or matrices from the same ranges as the strategies' defaults, from
a numpy Generator seeded here (so the numbers are reproducible), and prints the spread of the
statistic an assertion judges: on random models (where a mechanism claim should not hold, or an
identity must hold to rounding) and, where they exist, on planted or trained ones. docs/testing.md
records the output. ``--quick`` runs fewer draws; ``--only NAME`` one measurement.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from fourier_toy import config as config_mod
from fourier_toy.testing import data

MEASUREMENTS = ("float", "band", "division", "errors", "periods", "planted")


def random_config(rng: np.random.Generator, backend: str = "numpy", embedding: str | None = None):
    """A config from the default ranges of ``strategies.configs()``, drawn with a numpy Generator."""
    mo = int(rng.choice([10, 15, 20]))
    h = int(rng.choice([1, 2, 4]))
    need = data.filter_width(mo) + 4
    d = h * int(rng.integers(-(-need // h), max(-(-need // h), 64 // h) + 1))
    kind = embedding or str(rng.choice(["learned", "fourier"]))
    return config_mod.from_dict({
        "task": {"max_operand": mo},
        "model": {"d_model": d, "n_layers": int(rng.integers(1, 3)), "n_heads": h, "backend": backend},
        "embedding": {"kind": kind, "freeze": kind == "fourier"},
        "train": {"batch_size": 64, "max_steps": 200},
        "seed": int(rng.integers(0, 2**32)),
    })


def _q(values, qs=(0.5, 0.99, 1.0)) -> str:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "no values"
    return ", ".join(f"{'max' if q == 1.0 else f'q{int(q * 100)}'} {np.quantile(v, q):.3g}" for q in qs) + \
        f", min {v.min():.3g} (n = {v.size})"


def measure_float(n: int) -> dict:
    """The numba engine's logits against the numpy reference's on the same weights, relative to max |logits|."""
    from fourier_toy.testing.strategies import build_case
    from fourier_toy.training.backends import make_gpt

    rng = np.random.default_rng(101)
    out = {}
    for dtype in ("float32", "float64"):
        rel = []
        for _ in range(n):
            cfg = random_config(rng, backend="numba")
            fast, _ = build_case(cfg, dtype)
            ref = make_gpt(config_mod.ModelConfig(**{**cfg.model.__dict__, "backend": "numpy"}),
                           cfg.task.n_numbers, params=fast.params.copy())
            toks = data.task_examples(cfg.task.max_operand).tokens
            a, b = fast.forward(toks).astype(np.float64), ref.forward(toks).astype(np.float64)
            rel.append(np.abs(a - b).max() / np.abs(b).max())
        out[dtype] = rel
    return out


def measure_band(n: int) -> dict:
    """r = ||M y|| / (||M||_2 ||x||) after the filter on random models (M = F[removed] W_U), and before it."""
    from fourier_toy.analysis import filters, fourier
    from fourier_toy.testing.strategies import build_case

    rng = np.random.default_rng(202)
    after = {"float32": [], "float64": []}
    before = []
    for i in range(n):
        cfg = random_config(rng)
        dtype = ("float32", "float64")[i % 2]
        model, _ = build_case(cfg, dtype)
        toks = data.task_examples(cfg.task.max_operand).tokens
        fb = fourier.number_axis(model.n_numbers).basis
        for removed in ("low", "high"):
            M = fb.matrix[filters.remove_mask(fb, removed)] @ model.W_U[: fb.n].astype(np.float64)
            norm_M = np.linalg.norm(M, 2)
            hooks, _ = filters.filter_hooks(model, removed, "both")
            names = [nm for nm, _ in hooks]
            pre, post = {}, {}
            save = lambda store: (lambda x, name: store.__setitem__(name, x.astype(np.float64)))  # noqa: E731
            model.forward(toks, hooks=[(nm, save(pre)) for nm in names] + hooks + [(nm, save(post)) for nm in names])
            for nm in names:
                size = norm_M * np.linalg.norm(pre[nm])
                after[dtype].append(np.linalg.norm(post[nm] @ M.T) / size)
                before.append(np.linalg.norm(pre[nm] @ M.T) / size)
    return {**after, "before": before}


def measure_division(n: int) -> dict:
    """share_attn - share_mlp of the high band on random models (both init kinds)."""
    from fourier_toy.testing.assertions import module_band_shares
    from fourier_toy.testing.strategies import build_case

    rng = np.random.default_rng(303)
    diffs = []
    for i in range(n):
        cfg = random_config(rng)
        model, _ = build_case(cfg, "float64", ("perturbed", "gpt2")[i % 2])
        s = module_band_shares(model)
        diffs.append(s["attn"] - s["mlp"])
    return {"attn - mlp": diffs, "|attn - mlp|": np.abs(diffs)}


def measure_errors(n: int) -> dict:
    """Shares of wrong answers that are multiples of 10 / within 5, and their lift over chance
    (``assertions.chance_share``), on random models at max_operand 10..60, with and without filters."""
    from fourier_toy.analysis import filters
    from fourier_toy.testing.assertions import chance_share
    from fourier_toy.testing.strategies import build_case
    from fourier_toy.training.evaluate import predict

    rng = np.random.default_rng(404)
    out = {}
    kinds = {"multiple of 10": lambda w: w % 10 == 0, "within 5": lambda w: np.abs(w) <= 5}
    for mo in (10, 20, 30, 60):
        for i in range(max(1, n // 4)):
            cfg = random_config(rng)
            cfg.task.max_operand = mo
            need = data.filter_width(mo) + 4
            cfg.model.d_model = cfg.model.n_heads * -(-max(need, cfg.model.d_model) // cfg.model.n_heads)
            config_mod.validate(cfg)
            model, _ = build_case(cfg, "float64")
            sp = data.task_examples(mo)
            for removed in (None, "low", "high"):
                hooks = filters.filter_hooks(model, removed, "both")[0] if removed else []
                p = predict(model, sp.tokens, hooks=hooks).argmax(axis=1)
                e = sp.targets - p
                w = e[e != 0]
                if w.size < 10:
                    continue
                for name, ok in kinds.items():
                    frac = float(np.mean(ok(w)))
                    out.setdefault(f"{name}, p = {2 * mo + 1}", []).append(frac)
                    out.setdefault(f"{name} lift over chance, p = {2 * mo + 1}", []).append(
                        frac - chance_share(sp.targets, p, ok))
    return dict(sorted(out.items()))


def measure_periods(n: int) -> dict:
    """Power of the outlier scan on number_rows() draws (default ranges) and at lower signal."""
    from fourier_toy.analysis import outliers

    rng = np.random.default_rng(505)
    out = {}
    for label, noise_range, sizes in (("noise 0..1, default ranges", (0.0, 1.0), None),
                                      ("noise 2..4, N = 20..40", (2.0, 4.0), None),
                                      ("noise 4 (RMS 0.25), N = 20, width 8", (4.0, 4.0), (21, 8)),
                                      ("noise 4 (RMS 0.25), N = 120, width 64", (4.0, 4.0), (121, 64))):
        found_all, n_draws, t0 = 0, 0, time.perf_counter()
        for _ in range(n):
            if sizes is None:
                n_rows, width = 2 * int(rng.choice([10, 15, 20])) + 1, int(rng.integers(8, 65))
            else:
                n_rows, width = sizes
            periods = tuple(T for T in (2.0, 2.5, 5.0, 10.0) if rng.random() < 0.5) or (10.0,)
            W, planted = data.planted_rows(n_rows, width, periods, noise=float(rng.uniform(*noise_range)),
                                           seed=int(rng.integers(0, 2**32)))
            ks = {o.k for o in outliers.find_outliers(W[: planted.N])}
            found_all += all(k in ks for k in planted.ks)
            n_draws += 1
        out[label] = (found_all, n_draws, time.perf_counter() - t0)
    # False positives: the same rows shuffled.
    fp = 0
    for _ in range(n):
        n_rows, width = 2 * int(rng.choice([10, 15, 20])) + 1, int(rng.integers(8, 65))
        W, planted = data.planted_rows(n_rows, width, (2.0, 2.5, 5.0, 10.0), noise=0.5, seed=int(rng.integers(0, 2**32)))
        X = W[: planted.N][rng.permutation(planted.N)]
        fp += bool({o.k for o in outliers.find_outliers(X)} & set(planted.ks))
    out["shuffled rows: a key period found"] = (fp, n, 0.0)
    return out


def measure_planted(n: int) -> dict:
    """Division of labour, error types and the lens on known-answer models (fourier_toy.plant), drawn
    like ``known_answer_models()``: max_operand 30 or 60, either division, noise 0 or 0.01."""
    try:
        from fourier_toy.plant import PlantSpec, plant
    except ImportError as err:
        return {"skipped": str(err)}
    from fourier_toy.analysis import filters
    from fourier_toy.testing.assertions import chance_share, module_band_shares
    from fourier_toy.training.evaluate import predict

    out = {"share[high] - share[low]": [], "accuracy": []}
    kinds = {"low removed from low module: multiple of 10": ("low", "low", lambda w: w % 10 == 0),
             "high removed from high module: within 5": ("high", "high", lambda w: np.abs(w) <= 5)}
    for i in range(n):
        high = ("attn", "mlp")[i % 2]
        low = "mlp" if high == "attn" else "attn"
        spec = PlantSpec(max_operand=(30, 60)[(i // 2) % 2], high_module=high, low_module=low,
                         noise=(0.0, 0.01)[(i // 4) % 2], seed=i)
        model, cfg = plant(spec)
        s = module_band_shares(model)
        out["share[high] - share[low]"].append(s[high] - s[low])
        sp = data.task_examples(cfg.task.max_operand)
        preds = predict(model, sp.tokens).argmax(axis=1)
        out["accuracy"].append(np.mean(preds == sp.targets))
        for key, (removed, which, ok) in kinds.items():
            module = low if which == "low" else high
            hooks, _ = filters.filter_hooks(model, removed, module)
            p = predict(model, sp.tokens, hooks=hooks).argmax(axis=1)
            e = sp.targets - p
            w = e[e != 0]
            label = f"{key}, max_operand {spec.max_operand}, noise {spec.noise:g}"
            out.setdefault(label, []).append(np.mean(ok(w)) if w.size else math.nan)
            out.setdefault(f"{key}: lift over chance", []).append(
                np.mean(ok(w)) - chance_share(sp.targets, p, ok) if w.size else math.nan)
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fourier_toy.testing.calibrate", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer draws (about a minute)")
    ap.add_argument("--only", choices=MEASUREMENTS, action="append")
    args = ap.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    counts = {"float": 200, "band": 300, "division": 300, "errors": 200, "periods": 500, "planted": 40}
    for name in args.only or MEASUREMENTS:
        n = max(4, int(counts[name] * scale))
        t0 = time.perf_counter()
        result = globals()[f"measure_{name}"](n)
        print(f"== {name} ({n} draws, {time.perf_counter() - t0:.1f} s)")
        for key, values in result.items():
            if isinstance(values, tuple):
                print(f"  {key}: {values[0]} of {values[1]}")
            elif isinstance(values, str):
                print(f"  {key}: {values}")
            else:
                print(f"  {key}: {_q(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
