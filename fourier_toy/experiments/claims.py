"""The paper's claims as data: the one registry that the report and the tests both read.

Each `Claim` names GPT-2's finding (from paper.py), the conditions it reads, and the `Check`s its
verdict rests on. A check compares one statistic of one condition, over seeds, with a threshold:

- "mean >" / "mean >=" / "mean <": the seeds' mean, by its two-sided t interval (CONFIDENCE):
  it passes when the whole interval is on the claimed side of the threshold, fails when the whole
  interval is on the other side, and is *inconclusive* when the interval straddles it;
- "every >=": every seed at or above the threshold; a seed within `band` of it (the measurement's
  resolution, e.g. two test examples) makes the check inconclusive rather than a coin flip;
- "paired <": the statistic is below `other` (another statistic of the same runs), by the t interval
  of the seeds' paired differences;
- "faster": every seed reaches the level in fewer steps than any seed of `other` (a condition;
  a seed that never reaches it counts as infinitely slow).
A seed in which the statistic cannot be measured (a filter that leaves no null space, a lens whose
last layer is not yet accurate, a spectrum too short to hold period 10) makes the check *not
measurable*. A claim's verdict combines its checks (COMBINATION):
  not measurable when no check is measurable; inconclusive when any measurable check is;
  reproduced when every check passes; partly when some pass; not reproduced when none does.
`construction` checks are shown beside the verdict and never count toward it: an embedding built
and frozen with the key periods shows them by construction.

Every threshold is written below with its reason; none was chosen by looking at what passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from scipy import stats as scipy_stats

from fourier_toy.analysis import fourier
from fourier_toy.experiments import paper

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"
NOT_MEASURABLE, INCONCLUSIVE = "not measurable", "inconclusive"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_MEASURABLE, INCONCLUSIVE)
PASS, FAIL = "pass", "fail"  # a check's outcomes, beside INCONCLUSIVE and NOT_MEASURABLE

CONFIDENCE = 0.95  # two-sided t intervals of the seeds' means
MIN_SEEDS = 2      # a mean over fewer seeds has no interval: its checks are inconclusive
COMBINATION = ("not measurable when no check is measurable; inconclusive when any measurable check is; "
               "reproduced when every check passes; partly when some pass; not reproduced when none does")
# The frozen conditions whose number rows carry Fourier features: built with them, or pre-trained.
FEATURED = ("fourier_frozen", "pretrained_frozen")
KEY_PERIODS = tuple(f"{T:g}" for T in sorted(fourier.KEY_PERIODS, reverse=True))  # as summary.json keys them


# ---- statistics of one run (its summary.json) -----------------------------------------------------

def _diag(s: dict) -> dict:
    return s["diagnostics"]


def _ablation(key: str, field_: str) -> Callable[[dict], float | None]:
    return lambda s: _diag(s)["ablation"][key][field_]


def _has_null(*keys: str) -> Callable[[dict], bool]:
    # A filter whose M has full column rank (dim null(M) = 0) maps every module output to zero
    # whatever the model computes: no evidence either way.
    return lambda s: all((_diag(s)["ablation"][k]["dim_null"] or 0) > 0 for k in keys)


def _errors_under(key: str) -> Callable[[dict], bool]:
    return lambda s: _has_null(key)(s) and (_diag(s)["ablation"][key].get("n_errors") or 0) > 0


def _first_layer(accs: list, level: float = 0.9) -> int | None:
    return next((l for l, a in enumerate(accs) if a is not None and a >= level), None)


def _lens_lead(s: dict) -> float | None:
    """Layers by which +-10 accuracy reaches 0.9 before exact accuracy does (>= 0)."""
    lens = _diag(s)["lens"]
    exact, near = _first_layer(lens["acc"]), _first_layer(lens["acc_pm10"])
    return None if exact is None or near is None else float(exact - near)


def _lens_measurable(s: dict) -> bool:
    # A model whose last layer does not get the answer right has no "exact" layer to come after.
    accs = _diag(s)["lens"]["acc"]
    return bool(accs) and accs[-1] is not None and accs[-1] >= LENS_FINAL_ACC


def _errors_within_2(s: dict) -> float | None:
    hist = s["final"]["test"]["errors"]["histogram"]
    n = sum(hist.values())
    return sum(c for e, c in hist.items() if abs(int(e)) <= 2) / n if n else None


def _spectrum_measurable(s: dict) -> bool:
    # The outlier scan must be able to find period 10 at this N (older summaries lack the flag).
    return bool(_diag(s)["embedding"].get("key_periods_detectable", True))


def _steps_to_90(s: dict) -> float:
    steps = s.get("steps_to", {}).get("test_0.9")
    return math.inf if steps is None else float(steps)


@dataclass(frozen=True)
class Statistic:
    """A number read from one run's summary.json; `measurable` says whether that run can give it."""

    describe: str
    value: Callable[[dict], float | None]
    measurable: Callable[[dict], bool] = lambda s: True


STATISTICS: dict[str, Statistic] = {
    "test_acc": Statistic("test accuracy", lambda s: s["final"]["test"]["acc"]),
    "steps_to_90": Statistic("steps to 90% test accuracy", _steps_to_90),
    "n_key_outliers": Statistic("key periods (10, 5, 2.5, 2) among the embedding's spectral outliers",
                                lambda s: _diag(s)["embedding"]["n_key_outliers"], _spectrum_measurable),
    "division_gap": Statistic("attention's high-band share of module-logit energy minus the MLPs'",
                              lambda s: _diag(s)["modules"]["attn_high"] - _diag(s)["modules"]["mlp_high"]),
    **{f"acc_{m.lower()}_{r}_removed": Statistic(f"test accuracy with {m}'s {r} band removed",
                                                 _ablation(f"{m}|{r}", "acc"), _has_null(f"{m}|{r}"))
       for m in ("ATTN", "MLP") for r in ("low", "high")},
    "x10_mlp_low_removed": Statistic("share of errors that are multiples of 10 with the MLPs' low band removed",
                                     _ablation("MLP|low", "frac_x10"), _errors_under("MLP|low")),
    "below6_attn_high_removed": Statistic("share of errors below 6 with attention's high band removed",
                                          _ablation("ATTN|high", "frac_below_6"), _errors_under("ATTN|high")),
    "parity_acc": Statistic("parity accuracy keeping only period 2 in every module",
                            lambda s: _diag(s)["single_pass"]["parity_acc"],
                            lambda s: (_diag(s)["single_pass"]["dim_null"] or 0) > 0),
    "lens_lead": Statistic("layers by which +-10 accuracy reaches 0.9 before exact accuracy", _lens_lead,
                           _lens_measurable),
    "errors_within_2": Statistic("share of test errors within +-2", _errors_within_2,
                                 lambda s: (s["final"]["test"]["errors"]["n_errors"] or 0) > 0),
    "probe_mod10": Statistic("Cohen's kappa of a linear probe for n mod 10 on the number rows",
                             lambda s: _diag(s)["probe_kappa"]["mod10"]),
}


# ---- thresholds, each with its reason ------------------------------------------------------------

RESCUE_ACC = 0.9  # GPT-2-small with frozen pre-trained embeddings: 100% on 5/5 seeds (PAPER.md 2)
ACC_BAND = 0.011  # two test examples of the quick task (189); finer than that is rounding
KEY_OF_4 = 3.0    # "shows the periods": at least 3 of the 4 key periods among the outliers
NONE_OF_4 = 1.0   # "shows none": fewer than one key period on average (the null's false positives)
GAP = 0.1         # attention's high share at least 0.1 above the MLPs': a division, not a tie
ERRORS_SHARE = 0.8  # GPT-2: every error (1.0); a clear majority of the toy's errors
PARITY_FULL, PARITY_PART = 0.95, 0.75  # GPT-2 99.59%; chance is 0.5, so 0.75 is halfway
LENS_FINAL_ACC = 0.9  # the lens compares layers with the last; a last layer below this is unmeasured
SCRATCH_SMALL = 0.5   # GPT-2 from scratch: "mostly" off by 1 or 2 (XL: all)
PROBE_SEPARABLE = 0.5  # kappa: 0 is chance, 1 perfect; 0.5 splits "readable" from not

WHY = {
    "RESCUE_ACC": "GPT-2-small with frozen pre-trained embeddings reaches 100% on 5/5 seeds; 0.9 leaves room "
                  "for a toy's budget while still meaning the task is solved",
    "ACC_BAND": "two test examples of the quick task (1/189 each): a seed closer than that to 0.9 is undecided",
    "KEY_OF_4": "three of the four key periods: the pattern, allowing one missed",
    "NONE_OF_4": "fewer than one key period on average: at most the null's false positives",
    "GAP": "a division of labour needs a clear difference; 0.1 of the energy share",
    "ERRORS_SHARE": "GPT-2: every error; 0.8 is a clear majority",
    "PARITY_FULL": "near GPT-2's 99.59%",
    "PARITY_PART": "halfway between chance (0.5) and perfect",
    "LENS_FINAL_ACC": "a lens 'before exact' needs an exact last layer",
    "SCRATCH_SMALL": "'mostly' within +-2",
    "PROBE_SEPARABLE": "kappa above 0.5: the residue is mostly linearly readable",
}


@dataclass(frozen=True)
class Check:
    """One comparison a claim rests on: `statistic` of `condition` against `threshold` (or, for
    "paired <", against the statistic `other`; for "faster", against the condition `other`)."""

    statistic: str
    condition: str
    op: str  # "mean >", "mean >=", "mean <", "every >=", "paired <", "faster"
    threshold: float = 0.0
    other: str | None = None
    band: float = 0.0

    def describe(self) -> str:
        what = STATISTICS[self.statistic].describe
        if self.op == "paired <":
            return f"{self.condition}: {what} < {STATISTICS[self.other].describe} (paired over seeds)"
        if self.op == "faster":
            return f"{self.condition}: {what} fewer than {self.other}'s, in every seed"
        if self.op == "every >=":
            return f"{self.condition}: {what} >= {self.threshold:g} in every seed (within {self.band:g}: undecided)"
        return f"{self.condition}: mean {what} {self.op.split()[1]} {self.threshold:g}"


@dataclass(frozen=True)
class Claim:
    id: str
    number: int
    title: str
    gpt2: str  # GPT-2's finding with its numbers, from paper.py
    checks: tuple[Check, ...]
    construction: tuple[Check, ...] = ()
    thresholds: tuple[str, ...] = ()  # names in WHY

    @property
    def conditions(self) -> tuple[str, ...]:
        names = [c.condition for c in self.checks + self.construction]
        names += [c.other for c in self.checks if c.op == "faster"]
        return tuple(dict.fromkeys(names))

    def criterion(self) -> str:
        """The criterion in words: the checks, the combination rule and the thresholds' reasons."""
        text = "checks: " + "; ".join(c.describe() for c in self.checks) + ". Verdict: " + COMBINATION + "."
        if self.construction:
            text += " Construction checks (shown, not counted): " + "; ".join(c.describe() for c in self.construction) + "."
        if self.thresholds:
            text += " Thresholds: " + "; ".join(WHY[t] for t in self.thresholds) + "."
        return text


def _both(statistic: str, op: str, threshold: float, **kw) -> tuple[Check, ...]:
    return tuple(Check(statistic, c, op, threshold, **kw) for c in FEATURED)


_T1 = paper.TABLE1
CLAIMS: tuple[Claim, ...] = (
    Claim("embedding_spectra", 1, "Embedding spectra: key periods in Fourier and pre-trained rows, none from scratch",
          "GPT-2-XL, RoBERTa, Phi-2: outliers at periods 2, 2.5, 5, 10; trained from scratch: none",
          (Check("n_key_outliers", "pretrained_frozen", "mean >=", KEY_OF_4),
           Check("n_key_outliers", "fourier", "mean >=", KEY_OF_4),
           Check("n_key_outliers", "learned", "mean <", NONE_OF_4)),
          construction=(Check("n_key_outliers", "fourier_frozen", "mean >=", KEY_OF_4),),
          thresholds=("KEY_OF_4", "NONE_OF_4")),
    Claim("rescue", 2, "Rescue: frozen Fourier or pre-trained rows make a random model learn, and faster",
          f"GPT-2-small from scratch {paper.ACCURACY['gpt2_small_from_scratch']:.2%}; random init with frozen pre-trained "
          f"embeddings {paper.ACCURACY['gpt2_small_frozen_pretrained_embeddings']:.0%} on 5/5 seeds, converging faster",
          (*_both("test_acc", "every >=", RESCUE_ACC, band=ACC_BAND),
           *(Check("steps_to_90", c, "faster", other="learned") for c in FEATURED)),
          thresholds=("RESCUE_ACC", "ACC_BAND")),
    Claim("division_of_labour", 3, "Division of labour: attention high frequencies, MLPs low",
          "GPT-2-XL: attention logits almost only high frequencies (periods 2, 2.5, 5, 10); MLP logits also strong "
          "low frequencies",
          _both("division_gap", "mean >", GAP), thresholds=("GAP",)),
    Claim("table1", 4, "Table 1: removing low frequencies hurts the MLPs, removing high ones hurts attention",
          "GPT-2-XL test accuracy: MLP low removed {:.4f} < ATTN low removed {:.4f}; ATTN high removed {:.4f} < MLP high "
          "removed {:.4f}".format(_T1[("mlp", "low")][1], _T1[("attn", "low")][1], _T1[("attn", "high")][1],
                                  _T1[("mlp", "high")][1]),
          (*(Check("acc_mlp_low_removed", c, "paired <", other="acc_attn_low_removed") for c in FEATURED),
           *(Check("acc_attn_high_removed", c, "paired <", other="acc_mlp_high_removed") for c in FEATURED))),
    Claim("error_types", 5, "Error types under the filter: multiples of 10, or below 6",
          "GPT-2-XL: MLP low frequencies removed -> every error a multiple of 10; attention high frequencies "
          "removed -> every error below 6",
          (*_both("x10_mlp_low_removed", "mean >", ERRORS_SHARE), *_both("below6_attn_high_removed", "mean >", ERRORS_SHARE)),
          thresholds=("ERRORS_SHARE",)),
    Claim("single_pass_parity", 6, "Single-pass filter: period 2 alone gives parity",
          f"GPT-2-XL: keeping only period 2 predicts parity with {paper.SINGLE_PASS_PARITY:.2%} accuracy",
          (*_both("parity_acc", "mean >=", PARITY_FULL), *_both("parity_acc", "mean >=", PARITY_PART)),
          thresholds=("PARITY_FULL", "PARITY_PART")),
    Claim("logit_lens", 7, "Logit lens: +-10 accuracy rises before exact accuracy",
          "GPT-2-XL (Fig. 1a): accuracy within +-10 and +-2 rises in earlier layers than exact accuracy",
          _both("lens_lead", "mean >", 0.0), thresholds=("LENS_FINAL_ACC",)),
    Claim("from_scratch", 8, "From scratch: errors of +-1, +-2, no Fourier outliers",
          "GPT-2 from scratch: errors mostly off by 1 or 2 (XL: all within +-2); no Fourier outliers",
          (Check("errors_within_2", "learned", "mean >", SCRATCH_SMALL),
           Check("n_key_outliers", "learned", "mean <", NONE_OF_4)),
          thresholds=("SCRATCH_SMALL", "NONE_OF_4")),
    Claim("mod_probes", 9, "Probes: n mod 10 linearly readable from pre-trained rows, not from scratch",
          "Not measured in the paper; the Convergent Evolution follow-up: spikes alone are weak evidence, linear "
          "separability of n mod T is what separates pre-trained number embeddings from those trained from scratch",
          (Check("probe_mod10", "pretrained_frozen", "mean >", PROBE_SEPARABLE),
           Check("probe_mod10", "learned", "mean <", PROBE_SEPARABLE)),
          construction=(Check("probe_mod10", "fourier_frozen", "mean >", PROBE_SEPARABLE),),
          thresholds=("PROBE_SEPARABLE",)),
)
BY_ID = {c.id: c for c in CLAIMS}


# ---- judging ---------------------------------------------------------------------------------------

def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided t interval of the mean of `values` (at least MIN_SEEDS of them)."""
    n = len(values)
    if n < MIN_SEEDS:
        return -math.inf, math.inf
    if min(values) == max(values):  # no spread: the value itself, without a sum's rounding
        return values[0], values[0]
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def _values(runs: list[dict], statistic: str) -> list[float] | None:
    """The statistic of every run, or None when some run cannot measure it."""
    st = STATISTICS[statistic]
    out = []
    for s in runs:
        try:
            if not st.measurable(s):
                return None
            v = st.value(s)
        except (KeyError, TypeError, IndexError):
            return None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        out.append(float(v))
    return out


@dataclass
class CheckResult:
    check: Check
    outcome: str
    values: list[float] = field(default_factory=list)
    interval: tuple[float, float] | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return {"check": self.check.describe(), "statistic": self.check.statistic, "condition": self.check.condition,
                "op": self.check.op, "threshold": self.check.threshold, "other": self.check.other,
                "outcome": self.outcome, "values": [_finite(v) for v in self.values],
                "interval": None if self.interval is None else [_finite(x) for x in self.interval], "note": self.note}


def _finite(x: float) -> float | None:
    """JSON has no infinity: an unbounded interval end, or a level never reached, is None."""
    return x if math.isfinite(x) else None


def _side(lo: float, hi: float, threshold: float, above: bool, strict: bool) -> str:
    """pass / fail / inconclusive for an interval against a threshold on the claimed side."""
    if above:
        ok = lo > threshold if strict else lo >= threshold
        bad = hi <= threshold if strict else hi < threshold
    else:
        ok = hi < threshold if strict else hi <= threshold
        bad = lo >= threshold if strict else lo > threshold
    return PASS if ok else FAIL if bad else INCONCLUSIVE


def judge_check(check: Check, runs: dict[str, list[dict]]) -> CheckResult:
    """One check on the runs of every condition ({condition: [run summaries]})."""
    rs = runs.get(check.condition, [])
    if not rs:
        return CheckResult(check, NOT_MEASURABLE, note=f"no runs of {check.condition}")
    vals = _values(rs, check.statistic)
    if vals is None:
        return CheckResult(check, NOT_MEASURABLE, note="some seed cannot measure it")
    if check.op == "faster":
        if not runs.get(check.other):
            return CheckResult(check, NOT_MEASURABLE, vals, note=f"no runs of {check.other}")
        other = _values(runs[check.other], check.statistic)
        if other is None:
            return CheckResult(check, NOT_MEASURABLE, vals, note=f"some seed of {check.other} cannot measure it")
        if max(vals) < min(other):
            return CheckResult(check, PASS, vals, note=f"{check.other}: {other}")
        if min(vals) >= max(other):
            return CheckResult(check, FAIL, vals, note=f"{check.other}: {other}")
        return CheckResult(check, INCONCLUSIVE, vals, note=f"{check.other}: {other} (the seeds overlap)")
    if check.op == "every >=":
        low = min(vals)
        outcome = PASS if low >= check.threshold + check.band else FAIL if low < check.threshold - check.band else INCONCLUSIVE
        return CheckResult(check, outcome, vals)
    if check.op == "paired <":
        other = _values(rs, check.other)
        if other is None:
            return CheckResult(check, NOT_MEASURABLE, vals, note=f"some seed cannot measure {check.other}")
        diffs = [b - a for a, b in zip(vals, other)]
        lo, hi = t_interval(diffs)
        return CheckResult(check, _side(lo, hi, 0.0, True, True), diffs, (lo, hi), note="values: paired differences")
    lo, hi = t_interval(vals)
    above = check.op in ("mean >", "mean >=")
    return CheckResult(check, _side(lo, hi, check.threshold, above, check.op != "mean >="), vals, (lo, hi))


def combine(outcomes: list[str]) -> str:
    """The verdict of a claim from its checks' outcomes (COMBINATION)."""
    measured = [o for o in outcomes if o != NOT_MEASURABLE]
    if not measured:
        return NOT_MEASURABLE
    if INCONCLUSIVE in measured:
        return INCONCLUSIVE
    if all(o == PASS for o in outcomes):
        return REPRODUCED
    return PARTLY if PASS in measured else NOT_REPRODUCED


def judge(claim: Claim, runs: dict[str, list[dict]]) -> dict:
    """A claim on the runs ({condition: [run summaries]}) -> its verdict, checks and criterion."""
    results = [judge_check(c, runs) for c in claim.checks]
    built = [judge_check(c, runs) for c in claim.construction]
    return {"id": claim.id, "number": claim.number, "title": claim.title, "gpt2": claim.gpt2,
            "verdict": combine([r.outcome for r in results]), "criterion": claim.criterion(),
            "checks": [r.to_dict() for r in results], "construction": [r.to_dict() for r in built]}


def judge_all(runs: dict[str, list[dict]]) -> dict[str, dict]:
    return {c.id: judge(c, runs) for c in CLAIMS}
