"""`fourier-toy plant`: writes a run that eval, lens, ablate and spectrum read; bad input exits 2
with one line naming the flag."""

from __future__ import annotations

import pytest

from fourier_toy import cli

BASE = ["--max-operand", "20", "--d-model", "96"]


def run_cli(capsys, argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plant_then_every_reader(tmp_path, capsys):
    out = tmp_path / "p"
    code, text, _ = run_cli(capsys, ["plant", "--out", out, *BASE, "--high", "mlp", "--low", "attn", "--layers", "3"])
    assert code == 0
    assert "planted reversed" in text and "test acc 1.0000" in text and "train acc 1.0000" in text
    code, text, _ = run_cli(capsys, ["eval", out])
    assert code == 0 and "acc 1.0000" in text
    code, text, _ = run_cli(capsys, ["lens", out])
    assert code == 0 and "logit lens" in text
    code, text, _ = run_cli(capsys, ["ablate", out, "--json"])
    assert code == 0 and '"rows"' in text
    code, _, _ = run_cli(capsys, ["spectrum", out])
    assert code == 0


def test_force(tmp_path, capsys):
    out = tmp_path / "p"
    assert run_cli(capsys, ["plant", "--out", out, *BASE])[0] == 0
    code, _, err = run_cli(capsys, ["plant", "--out", out, *BASE])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--force" in err
    assert run_cli(capsys, ["plant", "--out", out, *BASE, "--seed", "2", "--force"])[0] == 0


@pytest.mark.parametrize("argv, flag", [
    (["--max-operand", "21"], "--max-operand"), (["--max-operand", "x"], "--max-operand"),
    (["--d-model", "16"], "--d-model"), (["--layers", "1"], "--layers"), (["--heads", "5"], "--heads"),
    (["--periods", "2.5,5"], "--periods"), (["--periods", "a,b"], "--periods"), (["--periods", "7"], "--periods"),
    (["--high", "ffn"], "--high"), (["--low", ""], "--low"), (["--noise", "-1"], "--noise"),
    (["--noise", "nan"], "--noise"), (["--low-frequencies", "99"], "--low-frequencies"),
    (["--magnitude-block", "4"], "--magnitude-block"), (["--seed", "-3"], "--seed"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, flag):
    code, out, err = run_cli(capsys, ["plant", "--out", tmp_path / "p", *BASE, *argv])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], err
    assert not (tmp_path / "p").exists()


def test_out_is_required(capsys):
    code, _, err = run_cli(capsys, ["plant"])
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1
