"""What the diagnostics must find in a planted model, computed from the spec alone.

The planted logits are a sum of components, each written by one module of one layer
(schedule.writers): ("high", T) the period-T term A cos(2 pi (n - s) / T), ("low", k) the share
of B w_k cos(2 pi k (n - c) / N), ("edge", None) the share of gamma e(a, b) on row N (logits.py).
Every diagnostic keeps some of them:

- the logit lens after layer l keeps the components of layers <= l (``up_to_layer``);
- a Table 1 filter removing a band from some modules drops those modules' components in that
  band: every column of W_U is one Fourier component, so the null-space projection removes
  exactly those coordinates (the edge column is zero on the analysed rows and always stays;
  ``filtered``);
- the single-pass filter keeping period T keeps ("high", T) and the edge (``single_pass``).

``expected_logits`` sums the kept components in float64 and bounds the model's deviation from
them (the products' error eta, logits.py, plus float32 rounding); ``outcome`` turns logits into
the range each statistic can take when the argmax is decided among candidates within that
bound (exact ties, e.g. every n = s mod 10 when only the comb is kept, are broken by rounding in
the model, so accuracy is a range there while "every error is a multiple of 10" is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fourier_toy.plant.logits import design
from fourier_toy.plant.schedule import Writer, first_low_layer, writers
from fourier_toy.plant.spec import PlantSpec

# (modules, removed band) in the order of the paper's Table 1 (analysis.filters.TABLE1_ROWS).
TABLE1_ROWS = (("none", None), ("both", "low"), ("attn", "low"), ("mlp", "low"),
               ("both", "high"), ("attn", "high"), ("mlp", "high"))
# Float32 rounding of logits of size |x|: a few ulps of the largest, plus an absolute floor.
ROUNDING = 1e-5

Keep = Callable[[Writer, tuple], bool]


def everything(writer: Writer, component: tuple) -> bool:
    return True


def up_to_layer(layer: int) -> Keep:
    """The logit lens after block `layer`."""
    return lambda w, comp: w.layer <= layer


def filtered(modules: str, removed: str | None) -> Keep:
    """A Table 1 filter: `removed` band ("low" / "high" / None) taken out of `modules`' outputs
    ("attn", "mlp", "both", "none") in every layer."""
    hit = {"none": (), "attn": ("attn",), "mlp": ("mlp",), "both": ("attn", "mlp")}[modules]
    return lambda w, comp: not (removed is not None and w.module in hit and comp[0] == removed)


def single_pass(period: float) -> Keep:
    """Only the frequency of `period` kept in every module's output (the edge always stays)."""
    return lambda w, comp: comp[0] == "edge" or (comp[0] == "high" and abs(comp[1] - period) < 1e-9)


def expected_logits(spec: PlantSpec, a, b, keep: Keep = everything) -> tuple[np.ndarray, float]:
    """(logits (n, p) float64 of the kept components, bound on |model - expected| per logit).

    a, b (n,) operands. The bound is eta times the amplitude of every kept coordinate (each
    planted feature is within relative error eta, logits.py) plus float32 rounding."""
    D = design(spec)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    s = a + b
    c = spec.block_centre(a) + spec.block_centre(b)
    n = np.arange(spec.n_numbers)
    logits = np.zeros((len(a), spec.n_numbers))
    bound = 0.0
    e = -(np.cos(2 * np.pi * spec.block_centre(a) / spec.N) + np.cos(2 * np.pi * spec.block_centre(b) / spec.N))
    for w in writers(spec):
        if w.high:
            for T in spec.high_periods:
                if keep(w, ("high", T)):
                    j = round(10 / T)
                    logits += D.A * np.cos(2 * np.pi * (((n[None, :] - s[:, None]) * j) % 10) / 10)
                    bound += D.A * D.eta * (1 if T == 2.0 else 2)
        if w.low_share:
            for k, wk in enumerate(D.weights, start=1):
                if keep(w, ("low", k)):
                    logits += D.B * wk * w.low_share * np.cos(
                        2 * np.pi * (((n[None, :] - c[:, None]) * k) % spec.N) / spec.N)
                    bound += D.B * wk * w.low_share * D.eta * 2
            if keep(w, ("edge", None)):
                logits[:, spec.N] += D.gamma * w.low_share * e
    scale = float(np.abs(logits).max(initial=0.0))
    return logits, bound + ROUNDING * (scale + 1.0)


@dataclass(frozen=True)
class Outcome:
    """The range of each statistic over the ways the model may break ties among the candidates.

    acc, acc_pm2, acc_pm10, parity: (lo, hi) fractions of the examples; frac_x10 / frac_below_6:
    (lo, hi) fractions of the wrong answers that are multiples of 10 / below 6 in magnitude
    (None when no answer can be wrong); errors_x10 / errors_below_6: every possible wrong answer is
    such an error (then the measured fraction is exactly 1 whenever there are errors)."""

    n: int
    acc: tuple
    acc_pm2: tuple
    acc_pm10: tuple
    parity: tuple
    n_errors: tuple
    frac_x10: tuple | None
    frac_below_6: tuple | None
    errors_x10: bool
    errors_below_6: bool
    unique: float  # fraction of examples whose argmax is unique

    def holds(self, name: str, value: float, slack: float = 0.0) -> bool:
        lo, hi = getattr(self, name)
        return lo - slack <= value <= hi + slack


def outcome(logits: np.ndarray, targets: np.ndarray, tol: float) -> Outcome:
    targets = np.asarray(targets, dtype=np.int64)
    m = len(targets)
    cand = logits >= logits.max(axis=1, keepdims=True) - 2 * tol
    n = np.arange(logits.shape[1])[None, :]
    err = targets[:, None] - n  # the error if the model answered n
    unique = cand.sum(axis=1) == 1
    hit = cand[np.arange(m), targets]

    def rng(within):
        ok = within | ~cand
        return float(np.mean(ok.all(axis=1))), float(np.mean((within & cand).any(axis=1)))

    wrong = cand & (err != 0)
    can_wrong, must_wrong = wrong.any(axis=1), ~hit

    def frac(pred):
        if not can_wrong.any():
            return None
        all_ok = (pred | ~wrong).all(axis=1)
        any_ok = (pred & wrong).any(axis=1)
        lo = float((must_wrong & all_ok).sum()) / float(can_wrong.sum())
        hi = min(1.0, float((can_wrong & any_ok).sum()) / max(1.0, float(must_wrong.sum())))
        return lo, hi

    x10, below6 = err % 10 == 0, np.abs(err) < 6
    return Outcome(
        n=m,
        acc=(float(np.mean(unique & hit)), float(np.mean(hit))),
        acc_pm2=rng(np.abs(err) <= 2),
        acc_pm10=rng(np.abs(err) <= 10),
        parity=rng(err % 2 == 0),
        n_errors=(int(must_wrong.sum()), int(can_wrong.sum())),
        frac_x10=frac(x10),
        frac_below_6=frac(below6),
        errors_x10=bool((x10 | ~wrong).all()),
        errors_below_6=bool((below6 | ~wrong).all()),
        unique=float(np.mean(unique)),
    )


def _operands(spec: PlantSpec, split) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.asarray(split.tokens)
    return tokens[:, 0], tokens[:, 2]


def predict(spec: PlantSpec, split, keep: Keep = everything) -> Outcome:
    """The outcome on a task.Split of the components `keep` selects."""
    a, b = _operands(spec, split)
    logits, tol = expected_logits(spec, a, b, keep)
    return outcome(logits, split.targets, tol)


def predicted_lens(spec: PlantSpec, split) -> list[Outcome]:
    """Per layer l: the logit lens after block l (the final LayerNorm only rescales: it is linear
    at position 3, so argmax and ties are those of the kept components)."""
    return [predict(spec, split, up_to_layer(layer)) for layer in range(spec.n_layers)]


def predicted_table1(spec: PlantSpec, split) -> list[tuple[str, str | None, Outcome]]:
    """The Table 1 rows (TABLE1_ROWS order) with their predicted outcomes."""
    return [(m, r, predict(spec, split, filtered(m, r))) for m, r in TABLE1_ROWS]


def predicted_single_pass(spec: PlantSpec, split, period: float = 2.0) -> Outcome:
    return predict(spec, split, single_pass(period))


def predicted_band_shares(spec: PlantSpec) -> dict[tuple[int, str], float | None]:
    """(layer, module) -> the high band's share of that module's logit energy over the analysed
    numbers 0..N-1 (lens.module_spectra): 1 for the high writer, 0 for a magnitude writer, a
    mixture for a module writing both, None for a module that writes no logits (its share is
    undefined). Each period-T component holds A^2 N / 2 (N for period 2: cos(pi n)^2 = 1), each
    frequency k (B w_k share)^2 N; the edge holds none (it is zero on rows 0..N-1)."""
    D = design(spec)
    out: dict[tuple[int, str], float | None] = {(l, m): None for l in range(spec.n_layers) for m in ("attn", "mlp")}
    for w in writers(spec):
        high = sum(D.A**2 * (1.0 if T == 2.0 else 0.5) for T in spec.high_periods) if w.high else 0.0
        low = sum((D.B * wk * w.low_share) ** 2 * 0.5 for wk in D.weights)
        out[(w.layer, w.module)] = high / (high + low)
    return out


def lens_claim(spec: PlantSpec) -> tuple[int, int]:
    """(first layer whose lens is within 10 of a + b, first layer whose lens is exact).

    The first is the magnitude's first writer (layer 0 for an MLP; layer 1 for attention, which
    needs layer 0's MLP to compute it first); the second is the last layer, where the units digit
    arrives, or that same first layer when magnitude_block = 1 (the magnitude alone is then
    exact). The lens shows +-10 before exact iff the first is smaller: not for attention's
    magnitude in a 2-layer model, nor for an exact magnitude."""
    first = first_low_layer(spec)
    return first, (first if spec.magnitude_block == 1 else spec.n_layers - 1)


def noise_tolerance(spec: PlantSpec, n_sigma: float = 3.0) -> float:
    """First-order estimate of the weight noise (spec.noise units) below which the answer's
    margin (logits.MARGIN) survives: MARGIN / (n_sigma * sd), sd the standard deviation, per unit
    noise, of logit(n) - logit(s) caused by noise on layer 0's c_proj, the dominant tensor (its
    entries are ~ B / eps^2, logits.py). Noise on an entry of c_proj adds (hidden activation) x
    noise x rms(c_proj) to the output, i.i.d. over the design coordinates (Q is orthonormal), and
    every readable coordinate moves a logit difference by at most 2 |W_U| <= 2:
        sd = rms(c_proj) * |h| * sqrt(2 * #readable coordinates),
    |h| the root-mean-square norm of layer 0's hidden activations at '=' over all pairs of the task.
    Noise elsewhere and the two pairs that rely on the edge (margin 2 gamma) are left out."""
    from fourier_toy.plant.construct import plant, weights
    from fourier_toy.task import Vocab, all_pairs

    quiet = PlantSpec(**{**spec.to_dict(), "noise": 0.0})
    model, _ = plant(quiet)
    pairs = all_pairs(spec.max_operand, ordered=False)
    tokens = Vocab(spec.n_numbers).encode(pairs[:, 0], pairs[:, 1])
    _, cache = model.run_with_cache(tokens, names=["blocks.0.mlp.hook_post"])
    h = cache["blocks.0.mlp.hook_post"][:, -1].astype(np.float64)
    c_proj = weights(quiet)["h.0.mlp.c_proj.weight"]
    S = quiet.slots
    sd = float(np.sqrt(np.mean(c_proj**2))) * float(np.sqrt(np.mean(np.sum(h * h, axis=1)))) \
        * float(np.sqrt(2 * (S.n_high_coords + S.n_low_coords)))
    return design(quiet).margin / (n_sigma * sd)
