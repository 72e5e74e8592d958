"""The verdict rules of the claims registry (experiments/claims.py) on hand-made run summaries.

`summary` makes one run's summary.json with only the fields the statistics read; `runs` makes
{condition: [summaries over seeds]}, starting from a set in which every claim is reproduced and
changing what a test names. No training happens here.
"""

import copy
import json
import math
import re

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from fourier_toy.experiments import claims as C
from fourier_toy.experiments import paper
from fourier_toy.experiments.conditions import conditions
from fourier_toy.experiments.claims import (INCONCLUSIVE, NOT_MEASURABLE, NOT_REPRODUCED, PARTLY, REPRODUCED,
                                            FAIL, PASS)

SEEDS = 3
TEST_N = 189  # the quick task's test split

# GPT-2's Table 1 pattern: removing the MLPs' low band or attention's high band hurts most.
PAPER_ABLATION = {"MLP|low": 0.3, "ATTN|low": 0.95, "ATTN|high": 0.4, "MLP|high": 0.9}


def summary(*, acc=1.0, steps90=300, n_key=4, detectable=None, attn_high=0.6, mlp_high=0.2, ablation=None,
            parity_acc=0.99, parity_null=10, lens_acc=(0.1, 0.5, 1.0), lens_pm10=(0.95, 1.0, 1.0),
            histogram=None, probe=0.9) -> dict:
    """One run's summary.json, minimal: every field a statistic of claims.py reads.

    `ablation` maps "MODULES|band" to overrides of that filter's row (acc, dim_null, frac_x10,
    frac_below_6, n_errors); `histogram` maps signed error -> count on the test split.
    """
    rows = {}
    for key, a in PAPER_ABLATION.items():
        n_err = round((1 - a) * TEST_N)
        rows[key] = {"acc": a, "loss": 1.0, "dim_null": 8, "frac_x10": 0.95 if key == "MLP|low" else 0.1,
                     "frac_below_6": 0.95 if key == "ATTN|high" else 0.2, "n_errors": n_err}
    for key, over in (ablation or {}).items():
        rows[key] = {**rows[key], **over}
    hist = {"-1": 4, "1": 5, "2": 3, "-12": 1} if histogram is None else histogram
    embedding = {"n_key_outliers": n_key, "prominence": {"10": 3.0, "5": 3.0, "2.5": 3.0, "2": 3.0}}
    if detectable is not None:
        embedding["key_periods_detectable"] = detectable
    return {
        "final": {"test": {"acc": acc, "n": TEST_N,
                           "errors": {"histogram": dict(hist), "n_errors": sum(hist.values())}}},
        "steps_to": {"test_0.9": steps90, "test_0.99": steps90},
        "diagnostics": {
            "embedding": embedding,
            "modules": {"attn_high": attn_high, "mlp_high": mlp_high},
            "ablation": rows,
            "single_pass": {"period": 2.0, "parity_acc": parity_acc, "acc": 0.1, "dim_null": parity_null},
            "lens": {"acc": list(lens_acc), "acc_pm2": list(lens_pm10), "acc_pm10": list(lens_pm10)},
            "probe_kappa": {"mod2": probe, "mod5": probe, "mod10": probe},
        },
    }


# Each condition's paper-like run: the featured (frozen Fourier / pre-trained) rows carry the key
# periods and rescue learning; the learned-from-scratch embedding shows none and stays off by 1 or 2.
PAPER_LIKE = {
    "learned": dict(acc=0.5, steps90=None, n_key=0, probe=0.0),
    "fourier_frozen": {},
    "fourier": {},
    "pretrained_frozen": {},
    "pretrained": {},
}


def runs(changes=None, seeds=SEEDS, base=PAPER_LIKE) -> dict:
    """{condition: [summaries over seeds]}: the paper-like runs with `changes` applied.

    `changes` maps a condition to summary() keyword overrides, either one dict for every seed or a
    list with one dict per seed (whose length is then the number of seeds); a condition mapped to
    None is left out.
    """
    changes = changes or {}
    out = {}
    for cond in dict.fromkeys([*base, *changes]):
        over = changes.get(cond, {})
        if over is None:
            continue
        per_seed = over if isinstance(over, list) else [over] * seeds
        out[cond] = [summary(**{**base.get(cond, {}), **o}) for o in per_seed]
    return out


def verdict(claim_id: str, rs: dict) -> str:
    return C.judge(C.BY_ID[claim_id], rs)["verdict"]


def outcomes(claim_id: str, rs: dict) -> list[str]:
    return [c["outcome"] for c in C.judge(C.BY_ID[claim_id], rs)["checks"]]


def check_of(claim_id: str, statistic: str, condition: str) -> C.Check:
    (check,) = [c for c in C.BY_ID[claim_id].checks if c.statistic == statistic and c.condition == condition]
    return check


FEATURED = ("fourier_frozen", "pretrained_frozen")
ALL_FEATURED_AND_TRAINED = ("fourier_frozen", "pretrained_frozen", "fourier", "pretrained")
BOTH = lambda **kw: {c: kw for c in FEATURED}  # noqa: E731
NO_NULL = {k: {"dim_null": 0} for k in PAPER_ABLATION}


# ---- every verdict of every claim ------------------------------------------------------------------

CASES = {
    "embedding_spectra": {
        REPRODUCED: {},
        PARTLY: {"learned": dict(n_key=4)},
        NOT_REPRODUCED: {"pretrained_frozen": dict(n_key=0), "fourier": dict(n_key=1), "learned": dict(n_key=4)},
        NOT_MEASURABLE: {c: dict(detectable=False) for c in ("pretrained_frozen", "fourier", "learned")},
        INCONCLUSIVE: {"pretrained_frozen": [dict(n_key=2), dict(n_key=4), dict(n_key=3)]},
    },
    "rescue": {
        REPRODUCED: {},
        PARTLY: {"fourier_frozen": dict(acc=0.5, steps90=None)},
        # (c): GPT-2-small's rescue means solving the task, not beating a failed baseline.
        NOT_REPRODUCED: {**BOTH(acc=0.063, steps90=None), "learned": dict(acc=0.048, steps90=None)},
        NOT_MEASURABLE: {"fourier_frozen": None, "pretrained_frozen": None},
        INCONCLUSIVE: {"pretrained_frozen": [dict(acc=1.0), dict(acc=1.0), dict(acc=0.895)]},
    },
    "division_of_labour": {
        REPRODUCED: {},
        PARTLY: {"fourier_frozen": dict(attn_high=0.2, mlp_high=0.2)},
        NOT_REPRODUCED: BOTH(attn_high=0.2, mlp_high=0.3),
        NOT_MEASURABLE: BOTH(attn_high=None),
        INCONCLUSIVE: {"fourier_frozen": [dict(attn_high=0.2), dict(attn_high=0.4), dict(attn_high=0.6)]},
    },
    "table1": {
        REPRODUCED: {},
        PARTLY: BOTH(ablation={"ATTN|high": {"acc": 0.95}, "MLP|high": {"acc": 0.4}}),
        NOT_REPRODUCED: BOTH(ablation={"ATTN|high": {"acc": 0.95}, "MLP|high": {"acc": 0.4},
                                       "MLP|low": {"acc": 0.95}, "ATTN|low": {"acc": 0.3}}),
        NOT_MEASURABLE: BOTH(ablation=NO_NULL),
        INCONCLUSIVE: {"pretrained_frozen": [dict(ablation={"MLP|low": {"acc": a}}) for a in (0.3, 0.99, 0.5)]},
    },
    "error_types": {
        REPRODUCED: {},
        PARTLY: BOTH(ablation={"ATTN|high": {"frac_below_6": 0.3}}),
        NOT_REPRODUCED: BOTH(ablation={"ATTN|high": {"frac_below_6": 0.3}, "MLP|low": {"frac_x10": 0.3}}),
        NOT_MEASURABLE: BOTH(ablation={"ATTN|high": {"n_errors": 0}, "MLP|low": {"n_errors": 0}}),
        INCONCLUSIVE: {"fourier_frozen": [dict(ablation={"MLP|low": {"frac_x10": f}}) for f in (0.5, 0.95, 1.0)]},
    },
    "single_pass_parity": {
        REPRODUCED: {},
        PARTLY: BOTH(parity_acc=0.8),
        NOT_REPRODUCED: BOTH(parity_acc=0.5),
        NOT_MEASURABLE: BOTH(parity_null=0),
        INCONCLUSIVE: {"pretrained_frozen": [dict(parity_acc=p) for p in (0.7, 0.99, 0.9)]},
    },
    "logit_lens": {
        REPRODUCED: {},
        PARTLY: {"fourier_frozen": dict(lens_pm10=(0.1, 0.5, 1.0))},
        NOT_REPRODUCED: BOTH(lens_pm10=(0.1, 0.5, 1.0)),
        NOT_MEASURABLE: BOTH(lens_acc=(0.01, 0.05), lens_pm10=(0.3, 0.91)),
        INCONCLUSIVE: {"pretrained_frozen": [dict(lens_pm10=p) for p in
                                             ((0.1, 0.5, 1.0), (0.2, 0.95, 1.0), (0.95, 1.0, 1.0))]},
    },
    "from_scratch": {
        REPRODUCED: {},
        PARTLY: {"learned": dict(n_key=4)},
        NOT_REPRODUCED: {"learned": dict(n_key=4, histogram={"-10": 5, "20": 5, "1": 1})},
        NOT_MEASURABLE: {"learned": dict(detectable=False, histogram={})},
        INCONCLUSIVE: {"learned": [dict(n_key=0), dict(n_key=1), dict(n_key=2)]},
    },
    "mod_probes": {
        REPRODUCED: {},
        PARTLY: {"learned": dict(probe=0.9)},
        NOT_REPRODUCED: {"pretrained_frozen": dict(probe=0.1), "learned": dict(probe=0.9)},
        NOT_MEASURABLE: {"pretrained_frozen": dict(probe=None), "learned": dict(probe=None)},
        INCONCLUSIVE: {"pretrained_frozen": [dict(probe=p) for p in (0.2, 0.6, 0.9)]},
    },
}


def test_cases_cover_every_claim_and_verdict():
    """The table below has a summary set for each of the five verdicts of every registered claim."""
    assert set(CASES) == set(C.BY_ID)
    assert all(set(by_verdict) == set(C.VERDICTS) for by_verdict in CASES.values())


@pytest.mark.parametrize("claim_id,expected", [(c, v) for c in CASES for v in C.VERDICTS])
def test_claim_gives_each_verdict(claim_id, expected):
    """judge(claim, runs)["verdict"] on a summary set made to give that verdict."""
    assert verdict(claim_id, runs(CASES[claim_id][expected])) == expected


def test_paper_like_runs_reproduce_every_claim_and_judge_all_agrees():
    """judge_all on the paper-like runs: every claim reproduced, each entry equal to judge(claim)."""
    rs = runs()
    result = C.judge_all(rs)
    assert list(result) == [c.id for c in C.CLAIMS]
    assert {k: v["verdict"] for k, v in result.items()} == {c.id: REPRODUCED for c in C.CLAIMS}
    assert all(result[c.id] == C.judge(c, rs) for c in C.CLAIMS)


def test_judgement_does_not_change_the_summaries():
    """Judging reads the summaries only: they are equal before and after."""
    rs = runs(CASES["logit_lens"][INCONCLUSIVE])
    before = copy.deepcopy(rs)
    C.judge_all(rs)
    assert rs == before


# ---- (a) the logit lens ----------------------------------------------------------------------------

def test_lens_of_a_model_that_never_learned_is_not_measurable():
    """(a) Exact accuracy 0.01/0.05 per layer, within-10 0.3/0.91: no exact last layer to come after,
    so the check is not measurable and the claim is not reproduced."""
    rs = runs(BOTH(lens_acc=(0.01, 0.05), lens_pm10=(0.3, 0.91)))
    assert verdict("logit_lens", rs) == NOT_MEASURABLE
    assert outcomes("logit_lens", rs) == [NOT_MEASURABLE, NOT_MEASURABLE]


def test_lens_needs_an_accurate_last_layer_even_when_a_middle_layer_was_exact():
    """A middle layer at 0.92 but the last at 0.6 (< LENS_FINAL_ACC): not measurable, not a lead of 1."""
    assert C.LENS_FINAL_ACC == 0.9
    rs = runs(BOTH(lens_acc=(0.2, 0.92, 0.6), lens_pm10=(0.95, 0.99, 0.99)))
    assert verdict("logit_lens", rs) == NOT_MEASURABLE
    one = runs({"pretrained_frozen": [dict(lens_acc=(0.2, 0.92, 0.6), lens_pm10=(0.95, 0.99, 0.99)), {}, {}]})
    assert outcomes("logit_lens", one) == [PASS, NOT_MEASURABLE]  # one such seed is enough


@pytest.mark.parametrize("last,expected", [(0.9, PASS), (0.8999, NOT_MEASURABLE)])
def test_lens_final_accuracy_boundary(last, expected):
    """The last layer at exactly LENS_FINAL_ACC is measurable; just below it is not."""
    rs = runs(BOTH(lens_acc=(0.5, last), lens_pm10=(0.95, 1.0)))
    assert outcomes("logit_lens", rs) == [expected, expected]


def test_lens_lead_counts_layers_between_within_10_and_exact():
    """The lead is the first layer with exact >= 0.9 minus the first with +-10 >= 0.9."""
    s = summary(lens_acc=(0.0, 0.1, 0.5, 0.95), lens_pm10=(0.5, 0.9, 1.0, 1.0))
    assert C.STATISTICS["lens_lead"].value(s) == 2.0
    assert C.STATISTICS["lens_lead"].value(summary(lens_acc=(0.95, 1.0), lens_pm10=(0.95, 1.0))) == 0.0


# ---- (b) division of labour ------------------------------------------------------------------------

def test_a_tiny_division_gap_is_not_a_division_of_labour():
    """(b) Attention's high share 0.001 above the MLPs' in every seed: neither partly nor reproduced."""
    rs = runs(BOTH(attn_high=0.201, mlp_high=0.2))
    assert verdict("division_of_labour", rs) not in (PARTLY, REPRODUCED)
    assert verdict("division_of_labour", rs) == NOT_REPRODUCED


def test_division_gap_exactly_at_the_threshold_fails():
    """"mean >" is strict: a gap of exactly GAP (0.1) in both seeds fails; 0.1 + 1e-9 passes."""
    assert outcomes("division_of_labour", runs(BOTH(attn_high=0.1, mlp_high=0.0), seeds=2)) == [FAIL, FAIL]
    assert outcomes("division_of_labour", runs(BOTH(attn_high=0.1 + 1e-9, mlp_high=0.0), seeds=2)) == [PASS, PASS]


def test_key_periods_exactly_three_of_four_pass():
    """"mean >=" is not strict: exactly KEY_OF_4 (3) key periods in every seed shows the periods; 2 does not."""
    assert outcomes("embedding_spectra", runs({c: dict(n_key=3) for c in ("pretrained_frozen", "fourier")})) \
        == [PASS, PASS, PASS]
    assert outcomes("embedding_spectra", runs({c: dict(n_key=2) for c in ("pretrained_frozen", "fourier")})) \
        == [FAIL, FAIL, PASS]


# ---- (c) rescue ------------------------------------------------------------------------------------

def test_rescue_needs_the_absolute_level():
    """(c) 0.063 against learned 0.048 is better but not rescued: both accuracy checks fail."""
    rs = runs({**BOTH(acc=0.063, steps90=None), "learned": dict(acc=0.048, steps90=None)})
    res = C.judge(C.BY_ID["rescue"], rs)
    acc = [c["outcome"] for c in res["checks"] if c["statistic"] == "test_acc"]
    assert acc == [FAIL, FAIL]
    assert res["verdict"] == NOT_REPRODUCED


@pytest.mark.parametrize("low,expected", [
    (0.905, INCONCLUSIVE), (0.895, INCONCLUSIVE), (0.9, INCONCLUSIVE),  # within ACC_BAND of 0.9
    (0.9 + 0.0111, PASS), (0.9 - 0.0111, FAIL), (1.0, PASS), (0.5, FAIL),
])
def test_rescue_seed_within_the_band_is_undecided(low, expected):
    """(c) A seed within ACC_BAND (two test examples) of 0.9 makes "every >=" inconclusive."""
    rs = runs({"pretrained_frozen": [dict(acc=1.0), dict(acc=low), dict(acc=1.0)]})
    check = check_of("rescue", "test_acc", "pretrained_frozen")
    assert C.judge_check(check, rs).outcome == expected


def test_acc_band_is_two_test_examples():
    """ACC_BAND is the resolution of the quick test split: at least two examples of 189, under three."""
    assert 2 / TEST_N <= C.ACC_BAND < 3 / TEST_N


def test_rescue_every_seed_must_reach_the_level_not_the_mean():
    """Nine seeds at 1.0 and one at 0.85: the mean's interval is above 0.9, yet one seed failed to learn."""
    rs = runs({c: [dict(acc=1.0)] * 9 + [dict(acc=0.85)] for c in FEATURED})
    assert C.t_interval([1.0] * 9 + [0.85])[0] > C.RESCUE_ACC  # a mean rule would pass
    res = C.judge(C.BY_ID["rescue"], rs)
    assert [c["outcome"] for c in res["checks"] if c["statistic"] == "test_acc"] == [FAIL, FAIL]
    assert all(c.op == "every >=" for c in C.BY_ID["rescue"].checks if c.statistic == "test_acc")


@pytest.mark.parametrize("featured,learned,expected", [
    ([100, 200, 300], [None, None, None], PASS),   # never reaching counts as infinitely slow
    ([100, 200, 300], [400, 500, None], PASS),
    ([100, 200, 450], [400, 500, 600], INCONCLUSIVE),  # the seeds overlap
    ([400, 500, 600], [100, 200, 400], FAIL),
    ([None, None, None], [None, None, None], FAIL),
])
def test_faster_compares_every_seed_with_every_seed(featured, learned, expected):
    """"faster": every seed below every seed of learned passes, every seed at or above them fails."""
    rs = runs({"fourier_frozen": [dict(steps90=s) for s in featured],
               "learned": [dict(steps90=s) for s in learned]})
    assert C.judge_check(check_of("rescue", "steps_to_90", "fourier_frozen"), rs).outcome == expected


# ---- (d) construction checks -----------------------------------------------------------------------

def test_frozen_fourier_spectrum_is_construction_only():
    """(d) The frozen Fourier embedding's spectrum is shown but does not move the verdict either way."""
    claim = C.BY_ID["embedding_spectra"]
    assert all(c.condition != "fourier_frozen" for c in claim.checks)
    assert [c.condition for c in claim.construction] == ["fourier_frozen"]
    res = C.judge(claim, runs({"fourier_frozen": dict(n_key=0)}))
    assert res["verdict"] == REPRODUCED and [c["outcome"] for c in res["construction"]] == [FAIL]
    failing = CASES["embedding_spectra"][NOT_REPRODUCED]
    res = C.judge(claim, runs(failing))
    assert res["verdict"] == NOT_REPRODUCED and [c["outcome"] for c in res["construction"]] == [PASS]


def test_probe_construction_check_does_not_count():
    """The frozen Fourier rows' probe is a construction check: a chance kappa there changes nothing."""
    res = C.judge(C.BY_ID["mod_probes"], runs({"fourier_frozen": dict(probe=0.0)}))
    assert res["verdict"] == REPRODUCED and [c["outcome"] for c in res["construction"]] == [FAIL]


# ---- (e) spectra whose key periods cannot be detected ----------------------------------------------

def test_undetectable_key_periods_are_not_measurable_not_none():
    """(e) key_periods_detectable False: "learned shows none" is not measurable, not passed."""
    rs = runs({"learned": dict(detectable=False, n_key=0)})
    assert outcomes("embedding_spectra", rs) == [PASS, PASS, NOT_MEASURABLE]
    assert verdict("embedding_spectra", rs) == PARTLY
    assert outcomes("from_scratch", rs) == [PASS, NOT_MEASURABLE]
    one_seed = runs({"learned": [dict(detectable=False), {}, {}]})
    assert outcomes("embedding_spectra", one_seed)[2] == NOT_MEASURABLE
    everywhere = runs({c: dict(detectable=False) for c in PAPER_LIKE})
    assert verdict("embedding_spectra", everywhere) == NOT_MEASURABLE
    assert C.judge(C.BY_ID["embedding_spectra"], everywhere)["construction"][0]["outcome"] == NOT_MEASURABLE


def test_summaries_without_the_detectability_flag_are_measurable():
    """Older summaries lack key_periods_detectable: their spectra count as measurable."""
    rs = runs()
    assert "key_periods_detectable" not in rs["learned"][0]["diagnostics"]["embedding"]
    assert outcomes("embedding_spectra", rs) == [PASS, PASS, PASS]
    assert outcomes("embedding_spectra", runs({c: dict(detectable=True) for c in PAPER_LIKE})) == [PASS] * 3


# ---- (f) filters that leave no null space ----------------------------------------------------------

@pytest.mark.parametrize("key", list(PAPER_ABLATION))
def test_no_null_space_in_one_seed_makes_table1_not_measurable(key):
    """(f) dim_null 0 for one filter in one seed: that condition's Table 1 check on it is not measurable."""
    rs = runs({"pretrained_frozen": [dict(ablation={key: {"dim_null": 0}}), {}, {}]})
    res = C.judge(C.BY_ID["table1"], rs)
    for c in res["checks"]:
        touches = key in (_filter(c["statistic"]), _filter(c["other"]))
        expected = NOT_MEASURABLE if c["condition"] == "pretrained_frozen" and touches else PASS
        assert c["outcome"] == expected, c
    assert res["verdict"] == PARTLY


def _filter(statistic: str) -> str:
    """"acc_attn_high_removed" -> "ATTN|high"."""
    _, m, band, _ = statistic.split("_")
    return f"{m.upper()}|{band}"


def test_no_null_space_in_one_seed_makes_error_types_not_measurable():
    """(f) dim_null 0 under MLP|low (and ATTN|high) in one seed: their error-type checks are not measurable."""
    rs = runs({c: [dict(ablation={"MLP|low": {"dim_null": 0}, "ATTN|high": {"dim_null": 0}}), {}, {}]
               for c in FEATURED})
    assert outcomes("error_types", rs) == [NOT_MEASURABLE] * 4
    assert verdict("error_types", rs) == NOT_MEASURABLE
    partial = runs({"fourier_frozen": [dict(ablation={"MLP|low": {"dim_null": 0}}), {}, {}]})
    assert outcomes("error_types", partial) == [NOT_MEASURABLE, PASS, PASS, PASS]


def test_no_null_space_in_one_seed_makes_parity_not_measurable():
    """(f) single-pass dim_null 0 in one seed: both parity checks of that condition are not measurable."""
    rs = runs({"fourier_frozen": [dict(parity_null=0), {}, {}]})
    res = C.judge(C.BY_ID["single_pass_parity"], rs)
    by = {(c["condition"], c["threshold"]): c["outcome"] for c in res["checks"]}
    assert by == {("fourier_frozen", C.PARITY_FULL): NOT_MEASURABLE, ("fourier_frozen", C.PARITY_PART): NOT_MEASURABLE,
                  ("pretrained_frozen", C.PARITY_FULL): PASS, ("pretrained_frozen", C.PARITY_PART): PASS}
    assert res["verdict"] == PARTLY
    assert verdict("single_pass_parity", runs({c: [dict(parity_null=0), {}, {}] for c in FEATURED})) == NOT_MEASURABLE


def test_missing_fields_are_not_measurable():
    """A seed whose summary lacks the statistic's field (an older run) makes the check not measurable."""
    rs = runs()
    del rs["fourier_frozen"][1]["diagnostics"]["modules"]
    del rs["pretrained_frozen"][0]["diagnostics"]["probe_kappa"]
    assert outcomes("division_of_labour", rs) == [NOT_MEASURABLE, PASS]
    assert outcomes("mod_probes", rs) == [NOT_MEASURABLE, PASS]


# ---- (g) intervals and seeds -----------------------------------------------------------------------

@pytest.mark.parametrize("claim_id", [c for c in CASES if c != "rescue"])
def test_one_seed_is_inconclusive_for_mean_checks(claim_id):
    """(g) A single seed has no t interval: every mean and paired check is inconclusive."""
    res = C.judge(C.BY_ID[claim_id], runs(seeds=1))
    assert {c["outcome"] for c in res["checks"]} == {INCONCLUSIVE}
    assert res["verdict"] == INCONCLUSIVE


def test_one_seed_still_decides_every_seed_checks():
    """(g) "every >=" and "faster" look at each seed, so one seed decides them."""
    assert outcomes("rescue", runs(seeds=1)) == [PASS] * 4
    assert C.t_interval([0.5]) == (-math.inf, math.inf)


def test_two_seeds_give_a_finite_interval():
    """MIN_SEEDS is 2: two seeds give a finite interval that decides a clear case."""
    assert C.MIN_SEEDS == 2
    lo, hi = C.t_interval([0.4, 0.41])
    assert math.isfinite(lo) and math.isfinite(hi) and lo < 0.405 < hi
    assert outcomes("division_of_labour", runs(seeds=2)) == [PASS, PASS]


@pytest.mark.parametrize("op,values,threshold,expected", [
    ("mean >", [0.5, 0.5, 0.5], 0.5, FAIL),       # strict: on the threshold is not above it
    ("mean >=", [0.5, 0.5, 0.5], 0.5, PASS),
    ("mean <", [0.5, 0.5, 0.5], 0.5, FAIL),
    ("mean >", [0.4, 0.5, 0.7], 0.5, INCONCLUSIVE),  # the interval straddles the threshold
    ("mean >=", [0.4, 0.5, 0.7], 0.5, INCONCLUSIVE),
    ("mean <", [0.4, 0.5, 0.7], 0.5, INCONCLUSIVE),
    ("mean >", [0.9, 0.91, 0.92], 0.5, PASS),
    ("mean >=", [0.9, 0.91, 0.92], 0.5, PASS),
    ("mean <", [0.9, 0.91, 0.92], 0.5, FAIL),
    ("mean >", [0.1, 0.11, 0.12], 0.5, FAIL),
    ("mean >=", [0.1, 0.11, 0.12], 0.5, FAIL),
    ("mean <", [0.1, 0.11, 0.12], 0.5, PASS),
])
def test_mean_checks_against_their_interval(op, values, threshold, expected):
    """(g) A mean check passes when its whole t interval is on the claimed side, fails when it is all on
    the other, and is inconclusive when it straddles the threshold."""
    rs = {"c": [summary(attn_high=v, mlp_high=0.0) for v in values]}
    res = C.judge_check(C.Check("division_gap", "c", op, threshold), rs)
    assert res.outcome == expected
    assert res.interval == pytest.approx(C.t_interval(values))


def test_straddling_interval_matches_scipy():
    """(g) The interval that makes [0.4, 0.5, 0.7] inconclusive against 0.5 is scipy's 95% t interval."""
    vals = [0.4, 0.5, 0.7]
    lo, hi = scipy.stats.t.interval(0.95, 2, loc=np.mean(vals), scale=scipy.stats.sem(vals))
    assert C.t_interval(vals) == pytest.approx((lo, hi))
    assert lo < 0.5 < hi


@pytest.mark.parametrize("diffs,expected", [
    ([0.3, 0.3, 0.3], PASS), ([0.0, 0.0, 0.0], FAIL), ([-0.2, 0.1, 0.4], INCONCLUSIVE), ([-0.3, -0.2, -0.4], FAIL),
])
def test_paired_check_uses_the_seeds_differences(diffs, expected):
    """"paired <": ATTN|low accuracy minus MLP|low accuracy, per seed, must be above 0 by its interval."""
    rs = {"pretrained_frozen": [summary(ablation={"MLP|low": {"acc": 0.5}, "ATTN|low": {"acc": 0.5 + d}})
                                for d in diffs]}
    res = C.judge_check(check_of("table1", "acc_mlp_low_removed", "pretrained_frozen"), rs)
    assert res.outcome == expected
    assert res.values == pytest.approx(diffs)


def test_a_condition_without_runs_is_not_measurable():
    """A check whose condition has no runs at all is not measurable (not a fail)."""
    assert outcomes("division_of_labour", runs({"fourier_frozen": None})) == [NOT_MEASURABLE, PASS]
    assert verdict("division_of_labour", runs({"fourier_frozen": None})) == PARTLY
    assert verdict("division_of_labour", {}) == NOT_MEASURABLE


# ---- (h) t_interval --------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=30),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_t_interval_matches_scipy(values, confidence):
    """(h) t_interval equals scipy.stats.t.interval(confidence, n - 1, mean, sem) on random data."""
    lo, hi = C.t_interval(values, confidence)
    mean, sem = float(np.mean(values)), float(scipy.stats.sem(values))
    tol = 1e-9 * (1 + max(abs(v) for v in values))
    if sem == 0:
        assert lo == pytest.approx(mean, abs=tol) and hi == pytest.approx(mean, abs=tol)
        return
    ref_lo, ref_hi = scipy.stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    assert lo == pytest.approx(ref_lo, abs=tol) and hi == pytest.approx(ref_hi, abs=tol)


def test_t_interval_default_confidence_is_95():
    """The registry's intervals are two-sided 95%: CONFIDENCE and t_interval's default agree."""
    vals = [1.0, 2.0, 4.0, 8.0]
    ref = scipy.stats.t.interval(0.95, 3, loc=np.mean(vals), scale=scipy.stats.sem(vals))
    assert C.CONFIDENCE == 0.95 and C.t_interval(vals) == pytest.approx(ref)


# ---- (i) the combination rule ----------------------------------------------------------------------

OUTCOMES = (PASS, FAIL, INCONCLUSIVE, NOT_MEASURABLE)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(OUTCOMES), max_size=8))
def test_combine_follows_the_rule(outs):
    """(i) combine: not measurable iff no check is measurable; else inconclusive iff any measurable check
    is; else reproduced iff every check passes; partly iff some pass; not reproduced iff none does."""
    v = C.combine(outs)
    measured = [o for o in outs if o != NOT_MEASURABLE]
    assert (v == NOT_MEASURABLE) == (not measured)
    assert (v == INCONCLUSIVE) == (bool(measured) and INCONCLUSIVE in measured)
    assert (v == REPRODUCED) == (bool(outs) and all(o == PASS for o in outs))
    assert (v == PARTLY) == (INCONCLUSIVE not in outs and PASS in outs and not all(o == PASS for o in outs))
    assert (v == NOT_REPRODUCED) == (bool(measured) and INCONCLUSIVE not in outs and PASS not in outs)
    assert v in C.VERDICTS
    assert C.combine(list(reversed(outs))) == v  # order does not matter


@pytest.mark.parametrize("outs,expected", [
    ([], NOT_MEASURABLE),
    ([NOT_MEASURABLE, NOT_MEASURABLE], NOT_MEASURABLE),
    ([PASS, INCONCLUSIVE], INCONCLUSIVE),
    ([PASS, PASS, INCONCLUSIVE, FAIL], INCONCLUSIVE),
    ([INCONCLUSIVE, NOT_MEASURABLE], INCONCLUSIVE),
    ([PASS, PASS], REPRODUCED),
    ([PASS, NOT_MEASURABLE], PARTLY),
    ([PASS, FAIL], PARTLY),
    ([FAIL, FAIL], NOT_REPRODUCED),
    ([FAIL, NOT_MEASURABLE], NOT_REPRODUCED),
])
def test_combine_examples(outs, expected):
    """(i) combine on the lists the rule's wording names."""
    assert C.combine(outs) == expected


# ---- (j) the registry's data -----------------------------------------------------------------------

def test_claim_conditions_are_reproduce_conditions():
    """(j) Every condition a claim reads (its checks, construction checks and "faster" baselines) is run
    by reproduce."""
    names = {c.name for c in conditions("toy")}
    for claim in C.CLAIMS:
        assert set(claim.conditions) <= names, claim.id
        for check in claim.checks + claim.construction:
            assert check.condition in names and (check.op != "faster" or check.other in names)
    assert set(C.FEATURED) <= names and set(PAPER_LIKE) == names


def test_check_statistics_and_ops_exist():
    """(j) Every check's statistic (and a paired check's other statistic) is in STATISTICS, with a known op."""
    ops = {"mean >", "mean >=", "mean <", "every >=", "paired <", "faster"}
    for claim in C.CLAIMS:
        for check in claim.checks + claim.construction:
            assert check.statistic in C.STATISTICS and check.op in ops, (claim.id, check)
            if check.op == "paired <":
                assert check.other in C.STATISTICS
            if check.op == "every >=":
                assert check.band > 0


def test_claims_ids_and_numbers_are_unique_and_ordered():
    """(j) BY_ID holds every claim; numbers run 1..n in registry order."""
    assert list(C.BY_ID) == [c.id for c in C.CLAIMS]
    assert [c.number for c in C.CLAIMS] == list(range(1, len(C.CLAIMS) + 1))
    assert all(c.checks for c in C.CLAIMS)


def test_every_named_threshold_has_a_reason():
    """(j) Every threshold a claim names has a WHY entry and is a number of claims.py, and every check's
    non-zero threshold (and band) is the value of one of its claim's named thresholds."""
    for claim in C.CLAIMS:
        values = set()
        for name in claim.thresholds:
            assert name in C.WHY and C.WHY[name].strip(), (claim.id, name)
            values.add(getattr(C, name))
        for check in claim.checks + claim.construction:
            for v in (check.threshold, check.band):
                assert v == 0 or v in values, (claim.id, check)


def test_criterion_mentions_every_threshold_and_the_rule():
    """(j) criterion() names each check's threshold value, each reason and the combination rule."""
    for claim in C.CLAIMS:
        text = claim.criterion()
        assert C.COMBINATION in text
        for check in claim.checks + claim.construction:
            assert check.describe() in text
            if check.op not in ("paired <", "faster"):
                assert re.search(rf"(?<![\d.]){re.escape(f'{check.threshold:g}')}(?![\d])", text), (claim.id, check)
            if check.band:
                assert f"{check.band:g}" in text
        for name in claim.thresholds:
            assert C.WHY[name] in text


def test_thresholds_keep_their_documented_values():
    """(j) The thresholds the WHY texts explain have the values those texts state."""
    assert C.RESCUE_ACC == 0.9 and C.KEY_OF_4 == 3 and C.NONE_OF_4 == 1 and C.GAP == 0.1
    assert C.ERRORS_SHARE == 0.8 and (C.PARITY_FULL, C.PARITY_PART) == (0.95, 0.75)
    assert C.SCRATCH_SMALL == 0.5 and C.PROBE_SEPARABLE == 0.5


def test_key_periods_are_the_papers_outlier_periods():
    """(j) The key periods are exactly paper.OUTLIER_PERIODS (10, 5, 2.5, 2): period 3.33 is not one of them."""
    assert sorted(float(T) for T in C.KEY_PERIODS) == sorted(paper.OUTLIER_PERIODS)
    assert len(C.KEY_PERIODS) == 4 and "3.33" not in C.KEY_PERIODS
    for T in C.KEY_PERIODS:
        assert T in C.STATISTICS["n_key_outliers"].describe


def _paper_numbers() -> list[float]:
    nums = [*paper.ACCURACY.values(), paper.SINGLE_PASS_PARITY, *paper.OUTLIER_PERIODS]
    nums += [x for pair in paper.TABLE1.values() for x in pair]
    return nums


def test_gpt2_numbers_come_from_paper_py():
    """(j) Every decimal or percentage quoted in a claim's `gpt2` text is a number of paper.py, and the
    quoted Table 1 and accuracy numbers are the ones paper.py holds for them."""
    nums = _paper_numbers()
    for claim in C.CLAIMS:
        for m in re.finditer(r"(\d+(?:\.(\d+))?)(%?)", claim.gpt2):
            text, decimals, pct = m.group(1), m.group(2) or "", m.group(3)
            if not decimals and not pct:
                continue  # integers: model names (GPT-2), seeds (5/5), periods
            value = float(text) / (100 if pct else 1)
            tol = 0.5 * 10 ** -(len(decimals) + (2 if pct else 0))
            assert any(abs(value - n) <= tol + 1e-12 for n in nums), (claim.id, m.group(0))
    t1 = C.BY_ID["table1"].gpt2
    for key in (("mlp", "low"), ("attn", "low"), ("attn", "high"), ("mlp", "high")):
        assert f"{paper.TABLE1[key][1]:.4f}" in t1
    rescue = C.BY_ID["rescue"].gpt2
    assert f"{paper.ACCURACY['gpt2_small_from_scratch']:.2%}" in rescue
    assert f"{paper.ACCURACY['gpt2_small_frozen_pretrained_embeddings']:.0%}" in rescue
    assert f"{paper.SINGLE_PASS_PARITY:.2%}" in C.BY_ID["single_pass_parity"].gpt2
    periods = re.findall(r"periods ([\d., ]+)", C.BY_ID["embedding_spectra"].gpt2)
    assert periods and {float(x) for x in re.split(r",\s*", periods[0].strip(" ,"))} == set(paper.OUTLIER_PERIODS)


def test_table1_claim_follows_the_papers_direction():
    """(j) Table 1's checks compare the pairs GPT-2-XL orders that way: MLP-low < ATTN-low and
    ATTN-high < MLP-high accuracy in paper.TABLE1."""
    T = paper.TABLE1
    assert T[("mlp", "low")][1] < T[("attn", "low")][1] and T[("attn", "high")][1] < T[("mlp", "high")][1]
    pairs = {(c.statistic, c.other) for c in C.BY_ID["table1"].checks}
    assert pairs == {("acc_mlp_low_removed", "acc_attn_low_removed"), ("acc_attn_high_removed", "acc_mlp_high_removed")}


# ---- results as data --------------------------------------------------------------------------------

def test_judge_result_is_plain_json():
    """judge's result (verdict, criterion, checks with values and intervals) survives strict JSON."""
    for claim in C.CLAIMS:
        res = C.judge(claim, runs(CASES[claim.id][INCONCLUSIVE]))
        assert json.loads(json.dumps(res, allow_nan=False)) == res
        assert res["verdict"] in C.VERDICTS and res["criterion"] == claim.criterion()
        assert len(res["checks"]) == len(claim.checks) and len(res["construction"]) == len(claim.construction)


def test_rescue_result_with_a_seed_that_never_converged_is_plain_json():
    """A featured seed that never reaches 0.9 gives a strict-JSON result: its steps are None, not inf."""
    res = C.judge(C.BY_ID["rescue"], runs({"fourier_frozen": [dict(steps90=None), {}, {}]}))
    json.dumps(res, allow_nan=False)
    faster = [c for c in res["checks"] if c["op"] == "faster" and c["condition"] == "fourier_frozen"]
    assert faster[0]["values"] == [None, 300.0, 300.0] and faster[0]["outcome"] == INCONCLUSIVE


def test_identical_seeds_exactly_at_the_threshold_are_decided():
    """Three seeds all at exactly 0.8 pass "mean >= 0.8" and fail "mean > 0.8"."""
    rs = {"c": [summary(attn_high=0.8, mlp_high=0.0) for _ in range(3)]}
    assert C.judge_check(C.Check("division_gap", "c", "mean >=", 0.8), rs).outcome == PASS
    assert C.judge_check(C.Check("division_gap", "c", "mean >", 0.8), rs).outcome == FAIL


def test_faster_without_the_baseline_runs_is_not_measurable():
    """"faster than learned" cannot be judged when there are no learned runs."""
    rs = runs({"learned": None})
    assert C.judge_check(check_of("rescue", "steps_to_90", "fourier_frozen"), rs).outcome == NOT_MEASURABLE
