"""The paper's claims against the toy: the quick reproduce experiments, 3 seeds per condition,
trained once per test session. Each test states its criterion (the same as report.py's) and asserts
it on the measured numbers; a claim the toy does not reproduce is a strict xfail whose reason holds
the numbers measured with `fourier-toy reproduce --preset quick` (see README, "Reproduce").
"""

import json

import numpy as np
import pytest

from fourier_toy.experiments import paper as ref
from fourier_toy.experiments.report import FEATURED
from fourier_toy.experiments.reproduce import reproduce

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce-quick")
    return reproduce(preset="quick", seeds=3, out=out, progress=False)


def per_seed(summary, condition, fn):
    """fn(run summary) for every seed of a condition, read back from the run directories."""
    from fourier_toy.experiments.report import load_runs
    from pathlib import Path

    runs = load_runs(Path(summary["dir"]))[condition]
    assert len(runs) >= 3, f"{condition}: {len(runs)} seeds finished"
    return [fn(r["summary"]) for r in runs]


def test_report_files_and_stable_keys(summary):
    out = summary["dir"]
    from pathlib import Path

    out = Path(out)
    assert (out / "report.md").is_file() and (out / "summary.json").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["claims"]) == {"embedding_spectra", "rescue", "division_of_labour", "table1", "error_types",
                                    "single_pass_parity", "logit_lens", "from_scratch"}
    for fig in ("embedding_spectra.png", "lens.png", "training_curves.png", "table1_fourier_frozen.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "Verdict" in text and f"{ref.TABLE1[('mlp', 'low')][1]:.4f}" in text  # GPT-2's number beside the toy's


def test_fourier_and_pretrained_embeddings_show_the_key_periods_learned_does_not(summary):
    """Criterion: frozen Fourier embeddings have >= 3 of periods 10, 5, 2.5, 2 among their prominence
    outliers in every seed, and learned-from-scratch embeddings <= 1 in every seed."""
    fourier = per_seed(summary, "fourier_frozen", lambda s: s["diagnostics"]["embedding"]["n_key_outliers"])
    learned = per_seed(summary, "learned", lambda s: s["diagnostics"]["embedding"]["n_key_outliers"])
    assert min(fourier) >= 3 and max(learned) <= 1, (fourier, learned)


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: the digits-pre-trained toy rows show 0 of the 4 key periods as prominence outliers (prominence 1.5-1.8 at T = 10, 5, 2.5, 2, below the threshold 2; 64-dim rows)"))
def test_pretrained_toy_embedding_shows_the_key_periods(summary):
    """Criterion: the frozen transplanted (digits-pre-trained toy) rows show >= 3 of the 4 key periods
    among their outliers in every seed, as GPT-2's pre-trained rows do."""
    pre = per_seed(summary, "pretrained_frozen", lambda s: s["diagnostics"]["embedding"]["n_key_outliers"])
    assert min(pre) >= 3, pre


def test_rescue_frozen_fourier_beats_learned_in_every_seed(summary):
    """Criterion: every seed of frozen Fourier ends with higher test accuracy than every learned seed."""
    acc = lambda s: s["final"]["test"]["acc"]  # noqa: E731
    fourier, learned = per_seed(summary, "fourier_frozen", acc), per_seed(summary, "learned", acc)
    assert min(fourier) > max(learned), (fourier, learned)


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced in every seed: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: frozen toy source test acc 0.063 / 0.127 / 0.042 vs learned 0.011 / 0.021 / 0.048 (better on average, not in every seed)"))
def test_rescue_frozen_pretrained_beats_learned_in_every_seed(summary):
    """Criterion: every seed of the frozen transplanted toy source beats every learned seed on test."""
    acc = lambda s: s["final"]["test"]["acc"]  # noqa: E731
    pre, learned = per_seed(summary, "pretrained_frozen", acc), per_seed(summary, "learned", acc)
    assert min(pre) > max(learned), (pre, learned)


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: attention minus MLP high-band share on frozen Fourier -0.21 / -0.13 / -0.12 (the MLPs carry more high-frequency energy than attention; the toy's modules share both bands)"))
def test_division_of_labour_attention_high_mlp_low(summary):
    """Criterion: in every seed of both frozen featured conditions, attention's high-band share of
    module-logit energy (mean over layers) exceeds the MLP's by more than 0.1."""
    for cond in FEATURED:
        gaps = per_seed(summary, cond, lambda s: s["diagnostics"]["modules"]["attn_high"]
                        - s["diagnostics"]["modules"]["mlp_high"])
        assert min(gaps) > 0.1, (cond, gaps)


def _acc(s, modules, removed):
    return s["diagnostics"]["ablation"][f"{modules}|{removed}"]["acc"]


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: acc with MLP low removed 0.20 / 0.19 / 0.20 vs ATTN low removed 0.10 / 0.22 / 0.18 (GPT-2: 0.36 vs 0.99); removing either band from either module breaks the toy"))
def test_table1_mlp_low_hurts_more_than_attention_low(summary):
    """Criterion (GPT-2: MLP-low 0.36 vs ATTN-low 0.99): removing the low band from the MLPs leaves
    lower accuracy than removing it from attention, in every seed of frozen Fourier."""
    pairs = per_seed(summary, "fourier_frozen", lambda s: (_acc(s, "MLP", "low"), _acc(s, "ATTN", "low")))
    assert all(m < a for m, a in pairs), pairs


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: acc with ATTN high removed 0.026 / 0.079 / 0.026 vs MLP high removed 0.021 / 0.026 / 0.106 (GPT-2: 0.78 vs 0.98); dim null(M) is only 31 of 128 for this filter"))
def test_table1_attention_high_hurts_more_than_mlp_high(summary):
    """Criterion (GPT-2: ATTN-high 0.78 vs MLP-high 0.98): removing the high band from attention
    leaves lower accuracy than removing it from the MLPs, in every seed of frozen Fourier."""
    pairs = per_seed(summary, "fourier_frozen", lambda s: (_acc(s, "ATTN", "high"), _acc(s, "MLP", "high")))
    assert all(a < m for a, m in pairs), pairs


def test_removing_mlp_low_frequencies_leaves_errors_that_are_multiples_of_10(summary):
    """Criterion (GPT-2: every error): more than 80% of the errors are multiples of 10 with the MLPs'
    low band removed, in every seed of frozen Fourier."""
    fr = per_seed(summary, "fourier_frozen", lambda s: s["diagnostics"]["ablation"]["MLP|low"]["frac_x10"])
    assert min(fr) > 0.8, fr


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: share of errors below 6 with attention's high band removed 0.10 / 0.32 / 0.23 (GPT-2: every error)"))
def test_removing_attention_high_frequencies_leaves_errors_below_6(summary):
    """Criterion (GPT-2: every error): more than 80% of the errors are below 6 in magnitude with
    attention's high band removed, in every seed of frozen Fourier."""
    fr = per_seed(summary, "fourier_frozen", lambda s: s["diagnostics"]["ablation"]["ATTN|high"]["frac_below_6"])
    assert min(fr) > 0.8, fr


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: parity accuracy 0.54 / 0.52 / 0.48 (chance 0.5; GPT-2 0.9959); the single-pass filter leaves dim null(M) = 10 of d_model 128, too little for the test to mean much"))
def test_single_pass_period_2_gives_parity(summary):
    """Criterion (GPT-2: 99.59%): keeping only period 2 in every module predicts the answer's parity
    in >= 95% of test examples, in every seed of frozen Fourier."""
    par = per_seed(summary, "fourier_frozen", lambda s: s["diagnostics"]["single_pass"]["parity_acc"])
    assert min(par) >= 0.95, par


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced in every seed: measured with `fourier-toy reproduce --preset quick` (d_model 128, p = 121, 1,000 steps), seeds 0/1/2: first layer with +-10 acc >= 0.9 vs exact >= 0.9: (1, 1) / (1, 1) / (0, 1); layer-0 +-10 accuracy is ahead of exact but below 0.9 in two seeds"))
def test_logit_lens_within_10_comes_before_exact(summary):
    """Criterion (GPT-2 Fig. 1a): the first layer whose lens accuracy within +-10 reaches 0.9 is
    earlier than the first layer whose exact accuracy does, in every seed of frozen Fourier."""
    def first(accs):
        return next((l for l, a in enumerate(accs) if a >= 0.9), len(accs))

    order = per_seed(summary, "fourier_frozen",
                     lambda s: (first(s["diagnostics"]["lens"]["acc_pm10"]), first(s["diagnostics"]["lens"]["acc"])))
    assert all(p < e for p, e in order), order


def test_from_scratch_errors_are_mostly_within_2(summary):
    """Criterion (GPT-2 from scratch: errors mostly off by 1 or 2): more than half of the learned
    condition's test errors are within +-2, in every seed."""
    def small(s):
        hist = {int(k): v for k, v in s["final"]["test"]["errors"]["histogram"].items()}
        return sum(c for e, c in hist.items() if abs(e) <= 2) / max(1, sum(hist.values()))

    fr = per_seed(summary, "learned", small)
    assert min(fr) > 0.5, fr


def test_same_seed_same_numbers(summary, tmp_path):
    """Same config and seed, same numbers: one run of the grid retrained from scratch matches."""
    from pathlib import Path

    from fourier_toy.experiments.sweep import run_point

    run_dir = next((Path(summary["dir"]) / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    config.pop("derived")
    record = run_point(config, str(tmp_path / "again"))
    first = json.loads((run_dir / "summary.json").read_text())
    assert record["test_acc"] == first["final"]["test"]["acc"]
    assert np.isclose(record["train_acc"], first["final"]["train"]["acc"], rtol=0, atol=0)
