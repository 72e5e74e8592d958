"""What a planted model is asked to be: `PlantSpec`, a frozen and validated dataclass.

    PlantSpec(max_operand=60, d_model=128, n_layers=2, n_heads=4, high_periods=(2, 2.5, 5, 10),
              high_module="attn", low_module="mlp", low_frequencies=None, magnitude_block=5,
              noise=0.0, seed=0)

- ``high_periods``: the periods of the units-digit part of the answer's logits (the comb
  A * sum_T cos(2 pi (n - s) / T)). Each is 10 / j for j = 1..5 (10, 5, 3.33, 2.5, 2: the harmonics
  of period 10, the only periods that put n mod 10 on integer Fourier components), and together
  they must single out n mod 10 (the least common multiple of their integer periods is 10; e.g.
  (10,), (2, 5), (2, 2.5, 5, 10)).
- ``high_module`` / ``low_module``: the last-layer module ("attn" or "mlp") that writes the
  high-frequency (units digit) and the low-frequency (magnitude) part of the logits. GPT-2's
  division is ("attn", "mlp"); equal values put both parts in one module.
- ``low_frequencies``: K, the magnitude part uses the frequencies k = 1..K of the number axis
  (periods N / k, N = 2 * max_operand), all in the paper's low band k < tau. None (the default)
  takes the most that fit: the largest K < tau whose design fits d_model and n_heads. More
  frequencies make a sharper magnitude kernel, hence smaller weights and more tolerance to noise
  (logits.py); the resolved K is what the spec holds.
- ``magnitude_block``: q in {1, 3, 5}. The magnitude features of an operand carry the centre of
  its block of q numbers, not the number itself, so the magnitude part alone peaks within
  q - 1 of a + b (the paper's "approximation" component); q = 1 is exact.
- ``noise``: each weight tensor W becomes W + noise * rms(W) * Z, Z standard normal per entry,
  rms(W) = sqrt(mean(W**2)) of the noise-free tensor (a tensor that is all zero stays zero), drawn
  from np.random.default_rng([seed, config.RNG_PLANT_NOISE]) in the order of the model's layout.
- ``seed``: the run's seed (it also draws the train/val/test split, as for a trained run).

Every field is checked when the spec is made; a bad value raises ConfigError in one line naming
the field and what is allowed. The widths the construction needs (``required_d_model``,
``required_heads``) follow from the periods and K (see slots.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

from fourier_toy.errors import ConfigError
from fourier_toy.plant import slots as slots_mod

MODULES = ("attn", "mlp")
BLOCKS = (1, 3, 5)
# Periods allowed in high_periods: 10 / j, the harmonics of period 10 (PAPER.md: 2, 2.5, 3.33, 5, 10).
HARMONICS = {j: 10.0 / j for j in range(1, 6)}
_PERIOD_TOL = 5e-3  # "3.33" names 10/3
MAX_OPERAND = 100_000  # config.TaskConfig's limit


def paper_tau(N: int) -> int:
    """The band threshold the diagnostics use: ceil(50 N / 520), the paper's tau = 50 at N = 520
    (analysis.fourier.default_tau; repeated here because plant sits beside analysis, not above it)."""
    return -(-50 * N // 520)


def _int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: must be in [{lo}, {hi}], got {value}")
    return value


def _periods(value) -> tuple[float, ...]:
    allowed = "distinct periods from 10, 5, 3.33, 2.5, 2 (10/j) whose integer periods have least common multiple 10"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"high_periods: expected {allowed}, e.g. (2, 2.5, 5, 10); got {value!r}")
    js = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"high_periods: expected {allowed}; {v!r} is not a number")
        j = next((j for j, T in HARMONICS.items() if abs(v - T) <= _PERIOD_TOL), None)
        if j is None:
            raise ConfigError(f"high_periods: expected {allowed}; {v!r} is not one of them")
        js.append(j)
    if not js or len(set(js)) != len(js):
        raise ConfigError(f"high_periods: expected {allowed}; got {list(value)!r}")
    lcm = 1
    for j in js:
        lcm = math.lcm(lcm, Fraction(10, j).numerator)  # integer period of 10/j
    if lcm != 10:
        raise ConfigError(f"high_periods: expected {allowed}; {list(value)!r} singles out n mod {lcm}, not n mod 10")
    return tuple(HARMONICS[j] for j in js)


@dataclass(frozen=True)
class PlantSpec:
    max_operand: int = 60
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    high_periods: tuple = (2.0, 2.5, 5.0, 10.0)
    high_module: str = "attn"
    low_module: str = "mlp"
    low_frequencies: int | None = None
    magnitude_block: int = 5
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self):
        M = _int("max_operand", self.max_operand, 10, MAX_OPERAND)
        if M % 5:
            raise ConfigError(f"max_operand: must be a multiple of 5 (so that N = 2 * max_operand puts periods "
                              f"10, 5, 3.33, 2.5, 2 on integer Fourier components), got {M}")
        object.__setattr__(self, "high_periods", _periods(self.high_periods))
        for name in ("high_module", "low_module"):
            v = getattr(self, name)
            if v not in MODULES:
                raise ConfigError(f"{name}: expected one of {', '.join(MODULES)}, got {v!r}")
        _int("n_layers", self.n_layers, 2, 64)
        tau = paper_tau(self.N)
        if tau < 2:
            raise ConfigError(f"max_operand: {M} leaves no low band (tau = {tau}); use max_operand >= 10")
        if self.magnitude_block not in BLOCKS or isinstance(self.magnitude_block, bool):
            raise ConfigError(f"magnitude_block: expected one of {', '.join(map(str, BLOCKS))}, "
                              f"got {self.magnitude_block!r}")
        noise = self.noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) \
                or not 0.0 <= noise <= 1.0:
            raise ConfigError(f"noise: expected a number in [0, 1] (a fraction of each tensor's RMS), got {noise!r}")
        object.__setattr__(self, "noise", float(noise))
        _int("seed", self.seed, 0, 2**63 - 1)
        d = _int("d_model", self.d_model, 1, 65_536)
        _int("n_heads", self.n_heads, 2, d)
        if d % self.n_heads:
            raise ConfigError(f"n_heads: must divide d_model ({d}), got {self.n_heads}")
        if self.low_frequencies is None:
            fits = [K for K in range(1, tau) if self._fits(K)]
            object.__setattr__(self, "low_frequencies", fits[-1] if fits else 1)
        _int("low_frequencies", self.low_frequencies, 1, tau - 1)
        need_d = self.required_d_model
        if d < need_d:
            raise ConfigError(f"d_model: this spec needs at least {need_d} (its design has {self.slots.D0} "
                              f"coordinates), got {d}; use a larger d_model or fewer low_frequencies")
        need_h = self.required_heads(d // self.n_heads)
        if self.n_heads < need_h:
            raise ConfigError(f"n_heads: heads of size d_model / n_heads = {d // self.n_heads} need "
                              f"at least {need_h} heads for this spec, got {self.n_heads}; use fewer, wider heads "
                              f"or a larger d_model")

    def _fits(self, K: int) -> bool:
        sl = slots_mod.Slots(self.high_periods, K)
        d = self.d_model
        return (sl.required_d_model(self.high_module, self.low_module) <= d
                and sl.required_heads(d // self.n_heads, self.high_module, self.low_module) <= self.n_heads)

    # ---- derived -------------------------------------------------------------------------------

    @property
    def n_numbers(self) -> int:
        """p = 2 * max_operand + 1 number tokens (task.py)."""
        return 2 * self.max_operand + 1

    @property
    def N(self) -> int:
        """Points of the diagnostics' number axis: the numbers 0..N-1, N = p - 1 (analysis.fourier)."""
        return 2 * self.max_operand

    @property
    def tau(self) -> int:
        return paper_tau(self.N)

    @property
    def slots(self) -> "slots_mod.Slots":
        """The residual stream's design coordinates for this spec (slots.py)."""
        return slots_mod.Slots(self.high_periods, self.low_frequencies)

    @property
    def required_d_model(self) -> int:
        return self.slots.required_d_model(self.high_module, self.low_module)

    def required_heads(self, d_head: int) -> int:
        return self.slots.required_heads(d_head, self.high_module, self.low_module)

    @property
    def division(self) -> str:
        """'gpt2' (attention high, MLP low), 'reversed', or 'both-attn' / 'both-mlp'."""
        if self.high_module == self.low_module:
            return f"both-{self.high_module}"
        return "gpt2" if self.high_module == "attn" else "reversed"

    def block_centre(self, n):
        """The magnitude an operand's features carry: the centre of its block of q numbers among
        0..max_operand (blocks [q j, q j + q - 1], the last one cut at max_operand; the centre of
        [lo, hi] is (lo + hi) // 2). Numbers above max_operand are never operands and carry n."""
        import numpy as np

        n = np.asarray(n, dtype=np.int64)
        q, M = self.magnitude_block, self.max_operand
        lo = (n // q) * q
        hi = np.minimum(lo + q - 1, M)
        return np.where(n <= M, (lo + hi) // 2, n)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["high_periods"] = list(self.high_periods)
        return d
