"""Exit codes: a command whose runs failed exits 1 after writing what it can, and says what failed."""

import json

import pytest

from fourier_toy import cli
from fourier_toy.experiments import claims


def test_reproduce_with_a_missing_source_exits_1_and_reports_the_failed_runs(tmp_path, capsys):
    out = tmp_path / "r"
    code = cli.main(["reproduce", "--preset", "tiny", "--seeds", "1", "--workers", "0", "--no-progress",
                     "--source", str(tmp_path / "missing.npy"), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "2 run(s) failed" in err and "missing.npy" in err
    summary = json.loads((out / "summary.json").read_text())
    failed = summary["failed_runs"]
    assert sorted(f["condition"] for f in failed) == ["pretrained", "pretrained_frozen"]
    assert all(f["seed"] == 0 and "missing.npy" in f["error"] and "\n" not in f["error"] for f in failed)
    # Every claim reading a transplanted condition is not measurable, and says why.
    blocked = {c.id for c in claims.CLAIMS if {"pretrained", "pretrained_frozen"} & set(c.conditions)}
    assert blocked and set(summary["not_measurable"]) == blocked
    assert all(summary["verdicts"][cid] == claims.NOT_MEASURABLE for cid in blocked)
    md = (out / "report.md").read_text()
    assert "## Failed runs" in md and "missing.npy" in md and "Claims not measurable because of them" in md
    for f in failed:
        assert f["id"] in md
    assert "failed (see Failed runs)" in (out / "report.html").read_text()


def test_sweep_with_a_failing_point_exits_1(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('preset = "tiny"\n[base.model]\nbackend = "numpy"\n[base.train]\nmax_steps = 4\n'
                    f'[base.embedding]\nsource = "{tmp_path / "missing.npy"}"\n'
                    '[grid]\n"embedding.kind" = ["learned", "transplant"]\n')
    assert cli.main(["sweep", str(grid), "--workers", "0", "--no-progress", "--out", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out
    assert "1 ok, 1 failed" in out and "missing.npy" in out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_train_exits_1_with_the_step_and_loss_on_one_line(tmp_path, capsys):
    # AdamW bounds each step, so a large lr alone does not diverge; decoupled weight decay of
    # lr * wd = 1000 multiplies the weights by -999 each step and overflows them within a few steps.
    code = cli.main(["train", "--preset", "tiny", "--set", "model.backend=numpy", "--set", "train.lr=10",
                     "--set", "train.weight_decay=100", "--no-progress", "--out", str(tmp_path / "run")])
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "diverged"
    step, loss = summary["diverged"]["step"], summary["diverged"]["loss"]
    assert loss in ("nan", "inf", "-inf") and step == summary["step"] + 1
    assert f"diverged at step {step}: loss {loss}" in errors[0]
