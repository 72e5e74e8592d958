"""Write the weights of a planted model by hand: `plant(spec) -> (GPT, Config)`.

Derivation (design coordinates: slots.py; the planted logits and their margins: logits.py;
who writes what: schedule.py). Shapes: d = d_model, D0 = the design coordinates, H heads of
size dh = d / H, V = p + 2 tokens, 4 positions.

1. Residual space. Q (d, D0) holds the DCT-II vectors k = 1..D0 of R^d: orthonormal, and each
   orthogonal to the all-ones vector. Every embedding row, module output and bias is Q times a
   design vector, so the residual is always Q x with mean 0, and LayerNorm is
   LN(Q x) = Q x * gain / sqrt(|x|^2 / d + eps). Every LayerNorm gain is a scalar times ones, set
   to sqrt(|x3|^2 / d + eps) where |x3| is the residual norm at position 3 ('=') at that point,
   which the construction keeps independent of a and b (every part is a cos/sin pair of fixed
   amplitude, or a fixed vector): LayerNorm is then the identity at position 3. (The edge adds
   at most 2 gamma to a norm above B; its change of LN's scale is below float32's resolution.)
2. Embeddings. wte[n] (n < p) = Q [cos, sin of the angle of every feature of n] in the num slot:
   2 pi n / T for a period T, 2 pi k m(n) / N for a frequency k, m = the block centre
   (spec.block_centre). wte['+'], wte['='] = nu on their mark coordinate, wpe[j] = rho on pos j,
   nu = rho = sqrt(#features), so every position starts with the norm sqrt(2) nu.
3. Layer 0 attention gathers. A head attending to position t has W_Q: pos 3 -> its first query
   coordinate, W_K: pos t -> its first key coordinate, both g = sqrt(SCORE sqrt(dh)) / rho, so
   the score of position t is SCORE and of every other position 0 (no other position ever has a
   pos-3 / pos-t component). Its values copy up to dh num coordinates; W_O writes them into num
   (for t = 0: a's features) or nb (t = 2: b's features) of position 3. (Heads that are not used
   have zero weights: their output is 0.)
4. Layer 0 MLP multiplies. GELU(x) + GELU(-x) = x tanh(GELU_C (x + GELU_K x^3)) ~ GELU_C x^2,
   so sq_e(z) = (GELU(e z) + GELU(-e z)) / (GELU_C e^2) = z^2 (1 + O(e^2 z^2)), and
   square(z) = (4 sq_e(z) - sq_2e(z)) / 3 = z^2 + O(e^4 z^6) (logits.square). For x, y in [-1, 1]
       x y ~ (square(x + y) - square(x - y)) / 4
   with eight hidden units (at each scale s e, c_fc columns +-s e on x and y; c_proj rows
   +-weight / (4 GELU_C (s e)^2)), e = logits.product_scale (error eta). With alpha, beta the angles of a feature of a and of b:
       cos(alpha + beta) = ca cb - sa sb,   sin(alpha + beta) = sa cb + ca sb
   (period 2: cos(pi (a + b)) = ca cb, one product). These are written scaled by the amplitude
   they will have in the logits: A into sh for a period, B w_k into sl for a frequency k, and,
   when low_module = "mlp", B w_k / W into low directly (its share of the magnitude) with
   -gamma / W (cos 2 pi m(a)/N + cos 2 pi m(b)/N) into edge (two units, GELU(x) - GELU(-x) = x).
5. Later layers copy (schedule.py). A copying attention's heads all attend to position 3 (W_Q and
   W_K both read pos 3), and its OV map moves sh -> high (scale 1), sl -> low (scale 1 / W) and
   -(num + nb)'s k = 1 cosines -> edge (gamma / W). A copying MLP does the same with two units per
   value: GELU(x) - GELU(-x) = x exactly.
6. Unembedding (untied lm_head). Row n < N = Q [cos, sin of 2 pi n / T in high; of 2 pi k n / N
   in low]; row N is row 0 plus 1 on edge; the rows of '+' and '=' are 0. ln_f's gain makes the
   final LayerNorm the identity at position 3, so the logits are exactly logits.py's
       A sum_T cos(2 pi (n - s) / T) + B sum_k w_k cos(2 pi k (n - c) / N) + [n = N] gamma e(a, b)
   up to the products' error.
7. Noise (spec.noise): every tensor W of the layout, in order, gets noise * rms(W) * Z, Z drawn
   from np.random.default_rng([seed, RNG_PLANT_NOISE]) (a draw for every tensor, so a tensor's
   noise does not depend on the others' values).
"""

from __future__ import annotations

import math

import numpy as np

from fourier_toy import config as config_mod
from fourier_toy.config import GELU_C, LN_EPS, RNG_PLANT_NOISE, Config
from fourier_toy.errors import ConfigError
from fourier_toy.nn.model import GPT
from fourier_toy.nn.params import Layout, pack
from fourier_toy.plant.logits import SCORE, SQUARE_SCALES, design
from fourier_toy.plant.schedule import writers
from fourier_toy.plant.spec import PlantSpec
from fourier_toy.training.backends import make_gpt

N_CTX = 4  # [a, '+', b, '=']


def plant(spec: PlantSpec) -> tuple[GPT, Config]:
    """The planted model (numpy backend, engine None) and its Config."""
    if not isinstance(spec, PlantSpec):
        raise ConfigError(f"spec: expected a fourier_toy.plant.PlantSpec, got {type(spec).__name__}")
    cfg = plant_config(spec)
    tensors = weights(spec)
    layout = Layout.gpt2(spec.n_numbers + 2, spec.d_model, spec.n_layers, False, N_CTX)
    if spec.noise:
        tensors = add_noise(layout, tensors, spec.noise, spec.seed)
    model = make_gpt(cfg.model, spec.n_numbers, params=pack(layout, tensors))
    return model, cfg


def plant_config(spec: PlantSpec) -> Config:
    """The Config of a planted run: its task, model and seed; numpy backend, untied unembedding.
    (The train section keeps its defaults: `train --resume` can train a planted run further.)"""
    return config_mod.from_dict({
        "task": {"max_operand": spec.max_operand},
        "model": {"d_model": spec.d_model, "n_layers": spec.n_layers, "n_heads": spec.n_heads, "n_ctx": N_CTX,
                  "tied": False, "backend": "numpy"},
        "seed": spec.seed,
    })


def add_noise(layout: Layout, tensors: dict, noise: float, seed: int) -> dict:
    """W + noise * rms(W) * Z for every tensor, in layout order (see the module docstring)."""
    rng = np.random.default_rng([seed, RNG_PLANT_NOISE])
    out = {}
    for name, _, shape in layout.entries:
        t = np.asarray(tensors[name], dtype=np.float64)
        z = rng.standard_normal(shape)
        out[name] = t + noise * math.sqrt(float(np.mean(t * t))) * z
    return out


def dct_basis(d: int, D0: int) -> np.ndarray:
    """(d, D0): the DCT-II vectors k = 1..D0 of R^d, orthonormal and orthogonal to ones(d)."""
    i = np.arange(d)[:, None] + 0.5
    k = np.arange(1, D0 + 1)[None, :]
    return math.sqrt(2.0 / d) * np.cos(np.pi * i * k / d)


def _angle(numer, denom: int) -> np.ndarray:
    """2 pi (numer mod denom) / denom, the reduction done in integers (exact for any numer)."""
    return 2 * np.pi * (np.asarray(numer, dtype=np.int64) % denom) / denom


def feature_angles(spec: PlantSpec, feature, n) -> np.ndarray:
    """The angle of `feature` at the integers n: 2 pi n / T (T = 10 / j) or 2 pi k n / N."""
    if feature.kind == "high":
        j = round(10 / feature.period)
        return _angle(np.asarray(n) * j, 10)
    return _angle(np.asarray(n) * feature.k, spec.N)


class _Builder:
    """Design-space weights of one planted model, then mapped to GPT-2 tensors."""

    def __init__(self, spec: PlantSpec):
        self.spec, self.S, self.D = spec, spec.slots, design(spec)
        self.d, self.L, self.H = spec.d_model, spec.n_layers, spec.n_heads
        self.dh = self.d // self.H
        self.nu = math.sqrt(len(self.S.features))
        self.rho = self.nu
        self.g_qk = math.sqrt(SCORE * math.sqrt(self.dh)) / self.rho
        # What position 3's residual holds so far: its squared norm is a function of these.
        self.gathered = False  # num and nb (nu^2 each)
        self.computed = False  # sh (A^2 per period) and sl ((B w_k)^2 per frequency)
        self.high_written = False  # high (A^2 per period)
        self.low_written = 0.0  # the shares written into low so far: (B w_k * total)^2 each
        self.gains: dict[str, float] = {}

    @property
    def amp2(self) -> float:
        """|x3|^2: the '=' mark and pos 3 (nu^2 each) plus what has been written (writes into
        the same slot add coherently; the edge is left out: see the module docstring)."""
        D, n_high = self.D, len(self.S.high_features)
        total = 2 * self.nu**2 + (2 * self.nu**2 if self.gathered else 0.0)
        if self.computed:
            total += D.A**2 * n_high + sum((D.B * w) ** 2 for w in D.weights)
        if self.high_written:
            total += D.A**2 * n_high
        return total + sum((D.B * w * self.low_written) ** 2 for w in D.weights)

    def record(self, high: bool, low_share: float) -> None:
        self.high_written |= high
        self.low_written += low_share

    def gain(self, name: str) -> None:
        self.gains[name] = math.sqrt(self.amp2 / self.d + LN_EPS)

    # ---- embeddings and unembedding ------------------------------------------------------------

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        S, spec = self.S, self.spec
        p = spec.n_numbers
        E = np.zeros((p + 2, S.D0))
        n = np.arange(p)
        m = spec.block_centre(n)
        for f in S.features:
            ang = feature_angles(spec, f, n if f.kind == "high" else m)
            E[:p, S.index["num"][(f, "cos")]] = np.cos(ang)
            if "sin" in f.parts:
                E[:p, S.index["num"][(f, "sin")]] = np.sin(ang)
        E[p, S.mark["+"]] = self.nu
        E[p + 1, S.mark["="]] = self.nu
        P = np.zeros((N_CTX, S.D0))
        P[np.arange(N_CTX), S.pos] = self.rho
        return E, P

    def unembedding(self) -> np.ndarray:
        S, spec = self.S, self.spec
        p = spec.n_numbers
        U = np.zeros((p + 2, S.D0))
        n = np.arange(p)  # 0..N
        for f in S.features:
            slot = "high" if f.kind == "high" else "low"
            ang = feature_angles(spec, f, n)
            U[:p, S.index[slot][(f, "cos")]] = np.cos(ang)
            if "sin" in f.parts:
                U[:p, S.index[slot][(f, "sin")]] = np.sin(ang)
        U[spec.N, S.edge] = 1.0
        return U

    # ---- copy items ----------------------------------------------------------------------------

    def items(self, high: bool, low_share: float) -> list[tuple[np.ndarray, int, float]]:
        """(source (D0,), target coordinate, scale) for what a copying module writes."""
        S, out = self.S, []
        unit = np.eye(S.D0)
        if high:
            out += [(unit[S.index["sh"][key]], S.index["high"][key], 1.0) for key in S.index["high"]]
        if low_share:
            out += [(unit[S.index["sl"][key]], S.index["low"][key], low_share) for key in S.index["low"]]
            k1 = S.low_features[0]
            src = -(unit[S.index["num"][(k1, "cos")]] + unit[S.index["nb"][(k1, "cos")]])
            out.append((src, S.edge, self.D.gamma * low_share))
        return out

    # ---- attention -----------------------------------------------------------------------------

    def gather_attention(self):
        S, dh = self.S, self.dh
        Wq, Wk, Wv = (np.zeros((S.D0, self.d)) for _ in range(3))
        Wo = np.zeros((self.d, S.D0))
        keys = list(S.index["num"].items())
        chunks = [keys[i : i + dh] for i in range(0, len(keys), dh)]
        head = 0
        for target, dest in ((0, "num"), (2, "nb")):
            for chunk in chunks:
                c0 = head * dh
                Wq[S.pos[3], c0] = self.g_qk
                Wk[S.pos[target], c0] = self.g_qk
                for j, (key, src) in enumerate(chunk):
                    Wv[src, c0 + j] = 1.0
                    Wo[c0 + j, S.index[dest][key]] = 1.0
                head += 1
        self.gathered = True
        return Wq, Wk, Wv, Wo

    def copy_attention(self, items):
        S, dh = self.S, self.dh
        Wq, Wk, Wv = (np.zeros((S.D0, self.d)) for _ in range(3))
        Wo = np.zeros((self.d, S.D0))
        for i, (src, target, scale) in enumerate(items):
            head, j = divmod(i, dh)
            c0 = head * dh
            Wq[S.pos[3], c0] = self.g_qk
            Wk[S.pos[3], c0] = self.g_qk
            Wv[:, c0 + j] = src
            Wo[c0 + j, target] = scale
        return Wq, Wk, Wv, Wo

    # ---- MLPs ----------------------------------------------------------------------------------

    def product_mlp(self, low_share: float):
        S, D, eps = self.S, self.D, self.D.eps
        Wfc = np.zeros((S.D0, 4 * self.d))
        Wpr = np.zeros((4 * self.d, S.D0))
        u = 0

        def product(x, y, targets, sign):
            nonlocal u
            for scale, weight in SQUARE_SCALES:
                e = scale * eps
                coef = weight / (4 * GELU_C * e**2)
                for sx, sy, part in ((1, 1, 1), (-1, -1, 1), (1, -1, -1), (-1, 1, -1)):
                    Wfc[x, u] += sx * e
                    Wfc[y, u] += sy * e
                    for coord, w in targets:
                        Wpr[u, coord] += sign * part * w * coef
                    u += 1

        num, nb = S.index["num"], S.index["nb"]
        for f in S.features:
            if f.kind == "high":
                out = {part: [(S.index["sh"][(f, part)], D.A)] for part in f.parts}
            else:
                w = D.weights[f.k - 1]
                out = {part: [(S.index["sl"][(f, part)], D.B * w)] for part in f.parts}
                if low_share:
                    for part in f.parts:
                        out[part].append((S.index["low"][(f, part)], D.B * w * low_share))
            product(num[(f, "cos")], nb[(f, "cos")], out["cos"], +1)
            if "sin" in f.parts:
                product(num[(f, "sin")], nb[(f, "sin")], out["cos"], -1)
                product(num[(f, "sin")], nb[(f, "cos")], out["sin"], +1)
                product(num[(f, "cos")], nb[(f, "sin")], out["sin"], +1)
        if low_share:
            (src, target, scale), = [it for it in self.items(False, low_share) if it[1] == S.edge]
            for sign in (1, -1):
                Wfc[:, u] = sign * eps * src
                Wpr[u, target] = sign * scale / eps
                u += 1
        self.computed = True
        self.record(False, low_share)
        return Wfc, Wpr

    def copy_mlp(self, items):
        S = self.S
        Wfc = np.zeros((S.D0, 4 * self.d))
        Wpr = np.zeros((4 * self.d, S.D0))
        for i, (src, target, scale) in enumerate(items):
            for j, sign in enumerate((1, -1)):
                Wfc[:, 2 * i + j] = sign * src
                Wpr[2 * i + j, target] = sign * scale
        return Wfc, Wpr

    # ---- the whole model -----------------------------------------------------------------------

    def tensors(self) -> dict[str, np.ndarray]:
        S, d = self.S, self.d
        Q = dct_basis(d, S.D0)
        E, P = self.embeddings()
        t = {"wte.weight": E @ Q.T, "wpe.weight": P @ Q.T}
        by_place = {(w.layer, w.module): w for w in writers(self.spec)}
        zero_attn = tuple(np.zeros((S.D0, d)) for _ in range(3)) + (np.zeros((d, S.D0)),)
        for layer in range(self.L):
            h = f"h.{layer}."
            self.gain(h + "ln_1")
            w = by_place.get((layer, "attn"))
            if layer == 0:
                Wq, Wk, Wv, Wo = self.gather_attention()
            elif w is not None:
                Wq, Wk, Wv, Wo = self.copy_attention(self.items(w.high, w.low_share))
                self.record(w.high, w.low_share)
            else:
                Wq, Wk, Wv, Wo = zero_attn
            t[h + "attn.c_attn.weight"] = Q @ np.hstack([Wq, Wk, Wv])
            t[h + "attn.c_attn.bias"] = np.zeros(3 * d)
            t[h + "attn.c_proj.weight"] = Wo @ Q.T
            t[h + "attn.c_proj.bias"] = np.zeros(d)
            self.gain(h + "ln_2")
            w = by_place.get((layer, "mlp"))
            if layer == 0:
                Wfc, Wpr = self.product_mlp(w.low_share if w is not None else 0.0)
            elif w is not None:
                Wfc, Wpr = self.copy_mlp(self.items(w.high, w.low_share))
                self.record(w.high, w.low_share)
            else:
                Wfc, Wpr = np.zeros((S.D0, 4 * d)), np.zeros((4 * d, S.D0))
            t[h + "mlp.c_fc.weight"] = Q @ Wfc
            t[h + "mlp.c_fc.bias"] = np.zeros(4 * d)
            t[h + "mlp.c_proj.weight"] = Wpr @ Q.T
            t[h + "mlp.c_proj.bias"] = np.zeros(d)
        self.gain("ln_f")
        for name, g in self.gains.items():
            t[name + ".weight"] = np.full(d, g)
            t[name + ".bias"] = np.zeros(d)
        t["lm_head.weight"] = self.unembedding() @ Q.T
        return t


def weights(spec: PlantSpec) -> dict[str, np.ndarray]:
    """The noise-free planted weights, float64, by GPT-2 name."""
    return _Builder(spec).tensors()
