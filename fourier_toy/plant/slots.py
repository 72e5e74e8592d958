"""The residual stream of a planted model, in design coordinates.

The construction works in D0 named coordinates ("slots"); the model's d_model-dimensional residual
is Q x, with Q (d_model, D0) orthonormal columns orthogonal to the all-ones vector (construct.py).
Every vector the model ever adds to its residual lies in the span of Q, so LayerNorm's mean is
always 0 and LayerNorm is x * gain / sqrt(|x|^2 / d + eps).

A *feature* is one frequency of the number line: ``high`` period T (the angle 2 pi n / T) or
``low`` frequency k (the angle 2 pi k n / N). Each has a cos and a sin coordinate, except period 2,
whose sin (sin pi n) is identically 0. Slots, in order:

    pos    4         position j (wpe), read by the attention scores only
    mark   2         the tokens '+' and '='
    num    F         a number's features: its token embedding at positions 0 and 2, and a's
                     features gathered into position 3 by layer 0's attention
    nb     F         b's features gathered into position 3
    sh     F_high    the answer s = a + b's high features (A cos, A sin 2 pi s / T), written by
                     layer 0's MLP; W_U does not read them
    sl     F_low     the magnitude features (B w_k cos, sin 2 pi k c / N) of c = the approximate sum
    high   F_high    read by W_U: the units-digit part of the logits
    low    F_low     read by W_U: the magnitude part of the logits
    edge   1         read by W_U's row n = N only (the largest answer), a tie-breaker (logits.py)

F = F_high + F_low coordinates (F_high = 2 per period, 1 for period 2; F_low = 2 K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    kind: str  # "high" | "low"
    period: float | None  # high: T
    k: int | None  # low: the frequency k of the N-point axis

    @property
    def parts(self) -> tuple[str, ...]:
        return ("cos",) if self.kind == "high" and self.period == 2.0 else ("cos", "sin")

    @property
    def name(self) -> str:
        return f"T={self.period:g}" if self.kind == "high" else f"k={self.k}"


class Slots:
    """Design coordinates: ``index[slot][(feature, part)]`` -> int, ``pos[j]``, ``mark[name]``,
    ``edge``; ``D0`` coordinates in all."""

    def __init__(self, high_periods, low_frequencies: int):
        self.high_features = [Feature("high", float(T), None) for T in high_periods]
        self.low_features = [Feature("low", None, k) for k in range(1, low_frequencies + 1)]
        self.features = self.high_features + self.low_features
        n = 0

        def take(count):
            nonlocal n
            out = list(range(n, n + count))
            n += count
            return out

        self.pos = take(4)
        self.mark = dict(zip(("+", "="), take(2)))
        self.index: dict[str, dict[tuple[Feature, str], int]] = {}
        for slot, feats in (("num", self.features), ("nb", self.features), ("sh", self.high_features),
                            ("sl", self.low_features), ("high", self.high_features), ("low", self.low_features)):
            keys = [(f, part) for f in feats for part in f.parts]
            self.index[slot] = dict(zip(keys, take(len(keys))))
        self.edge = take(1)[0]
        self.D0 = n

    # ---- sizes ---------------------------------------------------------------------------------

    @property
    def n_high_coords(self) -> int:
        return len(self.index["high"])

    @property
    def n_low_coords(self) -> int:
        return len(self.index["low"])

    @property
    def n_num_coords(self) -> int:
        return len(self.index["num"])

    def product_units(self, low_is_mlp: bool) -> int:
        """Hidden units of layer 0's MLP: 8 per product (two squares, each of two GELUs at two
        scales), one product for period 2, four for every other feature; 2 more for the edge when
        the MLP writes the magnitude part."""
        per = sum(8 if f.parts == ("cos",) else 32 for f in self.features)
        return per + (2 if low_is_mlp else 0)

    def copy_items(self, high: bool, low: bool) -> int:
        """Values a copying module moves into the readable slots: the high coordinates, and the
        low coordinates plus the edge."""
        return (self.n_high_coords if high else 0) + (self.n_low_coords + 1 if low else 0)

    def required_d_model(self, high_module: str, low_module: str) -> int:
        """D0 + 1 (Q's columns avoid the all-ones direction) and 4 d_model >= the hidden units."""
        units = [self.product_units(low_module == "mlp")]
        if "mlp" in (high_module, low_module):
            units.append(2 * self.copy_items(high_module == "mlp", low_module == "mlp"))
        return max(self.D0 + 1, *(math.ceil(u / 4) for u in units))

    def required_heads(self, d_head: int, high_module: str, low_module: str) -> int:
        """Layer 0 gathers a and b with separate heads (F values each); a copying attention moves
        its items with heads that all attend to position 3."""
        need = 2 * math.ceil(self.n_num_coords / d_head)
        items = self.copy_items(high_module == "attn", low_module == "attn")
        return max(need, math.ceil(items / d_head))
