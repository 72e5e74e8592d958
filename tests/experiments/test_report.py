"""Verdict rules of report.py on hand-built run summaries (no training): a filter that leaves no
null space erases every module output, so the claims resting on it must not be judged."""

import pytest

from fourier_toy.experiments import report
from fourier_toy.experiments.report import NOT, PARTLY, REPRODUCED, TABLE1_KEYS, UNMEASURABLE


def _run(acc: dict, dim_null: dict, x10=0.9, below6=0.9, parity=0.99, parity_null=5):
    """One seed's summary: acc and dim_null keyed by (modules, removed) band ("low"/"high")."""
    ablation = {f"{m}|{r}": {"acc": acc.get((m, r), 0.5), "loss": 1.0, "dim_null": dim_null.get(r, 8),
                             "frac_x10": x10, "frac_below_6": below6} for m, r in TABLE1_KEYS}
    return {"summary": {"diagnostics": {"ablation": ablation, "single_pass": {
        "parity_acc": parity, "acc": 0.1, "dim_null": parity_null}}}}


# GPT-2's pattern: MLP-low hurts more than ATTN-low, ATTN-high more than MLP-high.
PAPER_LIKE = {("MLP", "low"): 0.1, ("ATTN", "low"): 0.9, ("ATTN", "high"): 0.2, ("MLP", "high"): 0.8}


@pytest.mark.parametrize("nulls,expected", [
    ({"low": 8, "high": 8}, REPRODUCED),
    ({"low": 8, "high": 0}, PARTLY),        # the high direction cannot be judged; low holds
    ({"low": 0, "high": 0}, UNMEASURABLE),
])
def test_table1_judges_only_directions_whose_filter_leaves_a_null_space(nulls, expected):
    runs = {"fourier_frozen": [_run(PAPER_LIKE, nulls) for _ in range(3)]}
    t = report.claim_table1(runs, "fourier_frozen")
    assert t["verdict"] == expected
    assert t["directions"]["attn_high_hurts_more_than_mlp_high"] is (None if nulls["high"] == 0 else True)


def test_table1_direction_that_fails_is_not_reproduced_even_beside_an_unmeasurable_one():
    flipped = {**PAPER_LIKE, ("MLP", "low"): 0.95}
    runs = {"fourier_frozen": [_run(flipped, {"low": 8, "high": 0}) for _ in range(3)]}
    assert report.claim_table1(runs, "fourier_frozen")["verdict"] == NOT


def test_error_types_need_the_filters_null_space():
    def verdict(nulls, x10, below6):
        runs = {"c": [_run(PAPER_LIKE, nulls, x10=x10, below6=below6) for _ in range(3)]}
        return report.claim_errors(report.claim_table1(runs, "c"))["verdict"]

    assert verdict({"low": 8, "high": 8}, 0.9, 0.9) == REPRODUCED
    assert verdict({"low": 8, "high": 0}, 0.9, 0.9) == PARTLY
    assert verdict({"low": 8, "high": 0}, 0.3, 0.9) == NOT
    assert verdict({"low": 0, "high": 0}, 0.9, 0.9) == UNMEASURABLE


def test_parity_is_not_measurable_when_the_single_pass_filter_erases_everything():
    def verdict(parity, nulls):
        runs = {c: [_run(PAPER_LIKE, {}, parity=parity, parity_null=n) for _ in range(3)]
                for c, n in zip(report.FEATURED, nulls)}
        return report.claim_parity(runs)["verdict"]

    assert verdict(0.99, (5, 5)) == REPRODUCED
    assert verdict(0.5, (5, 5)) == NOT
    assert verdict(0.5, (0, 0)) == UNMEASURABLE
    assert verdict(0.99, (5, 0)) == REPRODUCED  # judged on the condition that keeps a null space
