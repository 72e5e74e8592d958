"""The training loop, its run directory, resume, and the CLI's handling of bad input."""

import json

import numpy as np
import pytest

from fourier_toy import cli
from fourier_toy import config
from fourier_toy.runs.files import read_jsonl
from fourier_toy.runs.tensors import load_tensors
from fourier_toy.training.loop import train


def tiny(*overrides, backend="numpy"):
    return config.apply_overrides(config.from_preset("tiny"), [f"model.backend={backend}", *overrides])


def test_run_directory_has_every_file_and_metrics(tmp_path):
    result = train(tiny(), tmp_path / "run", progress=False)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.jsonl", "model.safetensors", "state.safetensors", "summary.json"} <= names
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    for r in records:
        for split in ("train", "val", "test"):
            assert r[split]["acc"] <= r[split]["acc_pm2"] <= r[split]["acc_pm10"] <= 1.0
    weights, meta = load_tensors(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == "40" and "h.0.attn.c_attn.weight" in weights
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["derived"]["n_numbers"] == 21
    assert result.stop_reason == "max_steps" and result.step == 40


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_resume_continues_bit_identically(tmp_path, backend):
    straight = train(tiny("train.max_steps=30", "train.checkpoint_every=15", backend=backend),
                     tmp_path / "a", progress=False)
    train(tiny("train.max_steps=15", "train.checkpoint_every=15", backend=backend), tmp_path / "b", progress=False)
    resumed_cfg = tiny("train.max_steps=30", "train.checkpoint_every=15", backend=backend)
    train(resumed_cfg, tmp_path / "b", resume=True, progress=False)
    wa, _ = load_tensors(tmp_path / "a" / "model.safetensors")
    wb, _ = load_tensors(tmp_path / "b" / "model.safetensors")
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
    sa, _ = load_tensors(tmp_path / "a" / "state.safetensors")
    sb, _ = load_tensors(tmp_path / "b" / "state.safetensors")
    np.testing.assert_array_equal(sa["opt.m"], sb["opt.m"])
    # The first leg evaluated where it stopped (15); everything else matches the straight run.
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")] == [10, 15, 20, 30]
    assert straight.step == 30


def test_same_config_and_seed_same_numbers(tmp_path):
    a = train(tiny(), tmp_path / "a", progress=False)
    b = train(tiny(), tmp_path / "b", progress=False)
    assert a.final == b.final
    c = train(tiny("seed=1"), tmp_path / "c", progress=False)
    assert c.final != a.final


@pytest.mark.parametrize("clip", ["1.0", "0"])
def test_how_steps_are_grouped_into_calls_does_not_change_the_run(tmp_path, monkeypatch, clip):
    """Steps go to GPT.train_steps in calls of up to STEPS_PER_CALL full batches of one epoch, cut
    at evaluations and checkpoints (and, without clipping, each call is one hand-off to the
    threads). Evaluating every 7 steps cuts them elsewhere than every 40; the weights are the same.
    With batches of 4, an epoch of the tiny preset is 13 full batches and one of a single example,
    which goes alone."""
    from fourier_toy.nn.model import GPT

    runs, calls, train_steps = {}, {}, GPT.train_steps

    def spy(self, tokens, *args):
        calls[every].append(len(tokens))
        return train_steps(self, tokens, *args)

    monkeypatch.setattr(GPT, "train_steps", spy)
    for every in (7, 40):
        calls[every] = []
        cfg = tiny(f"train.eval_every={every}", f"train.grad_clip={clip}", "train.batch_size=4", backend="numba")
        runs[every] = train(cfg, tmp_path / str(every), progress=False)
    assert [r["step"] for r in runs[7].history] == [7, 14, 21, 28, 35, 40]
    assert calls[40] == [8, 5, 1, 6, 7, 1, 8, 4]  # epochs of 14 steps, a checkpoint at 20
    assert calls[7] == [7, 6, 1, 6, 1, 6, 1, 7, 5]
    a, _ = load_tensors(tmp_path / "7" / "model.safetensors")
    b, _ = load_tensors(tmp_path / "40" / "model.safetensors")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert runs[7].final == runs[40].final


def test_target_accuracy_stops_early(tmp_path):
    result = train(tiny("train.max_steps=400", "train.target_accuracy=0.05", "train.target_split=train"),
                   tmp_path / "r", progress=False)
    assert result.stop_reason == "target_accuracy" and result.step < 400
    assert result.history[-1]["train"]["acc"] >= 0.05


def test_interrupted_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    run = tmp_path / "r"
    train(tiny("train.max_steps=20", "train.checkpoint_every=20"), run, progress=False)
    before = (run / "model.safetensors").read_bytes()
    import fourier_toy.runs.files as runs

    def crash(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny("train.max_steps=40", "train.checkpoint_every=20"), run, resume=True, progress=False)
    monkeypatch.undo()
    assert (run / "model.safetensors").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".") or "tmp" in p.name]
    train(tiny("train.max_steps=40", "train.checkpoint_every=20"), run, resume=True, progress=False)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, field", [
    (["train", "--preset", "huge"], "--preset"),
    (["train", "--set", "model.d_model=30"], "model.d_model"),
    (["train", "--set", "task.max_operand=0"], "task.max_operand"),
    (["train", "--set", "train.lr=fast"], "train.lr"),
    (["train", "--set", "model.wat=1"], "wat"),
    (["train", "--config", "/nonexistent.toml"], "--config"),
    (["train", "--resume", "/nonexistent-run"], "--resume"),
    (["train", "--seed", "x"], "--seed"),
    (["eval", "/nonexistent-run"], "RUN"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, argv, field):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert field in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_refuses_to_overwrite_and_force_replaces(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--set", "model.backend=numpy", "--out", str(out)]
    assert run_cli(capsys, *args)[0] == 0
    before = (out / "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, *args, "--seed", "3")
    assert code == 2 and "--resume" in err and "--force" in err
    assert (out / "model.safetensors").read_bytes() == before
    assert run_cli(capsys, *args, "--seed", "3", "--force")[0] == 0
    assert (out / "model.safetensors").read_bytes() != before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "--preset", "tiny", "--out", str(stranger), "--force")
    assert code == 2 and (stranger / "notes.txt").read_text() == "mine"


def test_cli_eval_json_and_text(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--preset", "tiny", "--set", "model.backend=numpy", "--out", str(out))[0] == 0
    code, text, _ = run_cli(capsys, "eval", str(out), "--split", "train", "--json")
    result = json.loads(text)
    assert code == 0 and result["split"] == "train" and 0 <= result["acc"] <= 1
    hist = result["errors"]["histogram"]
    assert sum(hist.values()) == result["errors"]["n_errors"] == round((1 - result["acc"]) * result["n"])
    code, text, _ = run_cli(capsys, "eval", str(out))
    assert code == 0 and "acc" in text
