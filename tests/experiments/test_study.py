"""`fourier-toy study`: a sweep over regime x condition x seed, judged regime by regime with the claims
registry; a claim is judged only on the checks whose conditions a regime ran."""

import json
from pathlib import Path

import pytest

from fourier_toy import cli
from fourier_toy.analysis.plots import is_our_png
from fourier_toy.experiments import claims
from fourier_toy.experiments import study
from fourier_toy.experiments.grid import expand, load_grid

CONDITIONS = [{"name": "learned", "embedding.kind": "learned"},
              {"name": "fourier_frozen", "embedding.kind": "fourier", "embedding.freeze": True}]
REGIMES = [{"name": "base"}, {"name": "wd 1", "train.weight_decay": 1.0}]


def _write(path, axes: dict) -> str:
    """A tiny-preset GRID.toml; JSON lists of tables become TOML by writing " = " for ": "."""
    lines = ['preset = "tiny"', "[grid]", *(f"{key} = {json.dumps(values).replace(': ', ' = ')}"
                                          for key, values in axes.items())]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    grid = d / "grid.toml"
    _write(grid, {"regime": REGIMES, "condition": CONDITIONS, "seed": [0, 1]})
    assert cli.main(["study", str(grid), "--workers", "0", "--out", str(d / "out"), "--no-progress"]) == 0
    return grid, d / "out"


def test_study_writes_a_verdict_per_claim_and_regime(tiny_study):
    _, out = tiny_study
    summary = json.loads((out / study.STUDY_JSON).read_text())
    assert [r["name"] for r in summary["regimes"]] == ["base", "wd 1"]
    assert summary["regimes"][1]["set"] == {"train.weight_decay": 1.0}
    for r in summary["regimes"]:
        assert set(r["claims"]) == {c.id for c in claims.CLAIMS}
        assert all(j["verdict"] in (*claims.VERDICTS, study.NOT_RUN) for j in r["claims"].values())
        assert set(r["conditions"]) == {"learned", "fourier_frozen"}
        c = r["conditions"]["fourier_frozen"]
        assert c["n_seeds"] == 2 and len(c["test_acc"]) == 2 and c["d_model"] == 32
        # the filters' null spaces are reported with each regime, and are what the diagnostics found
        assert set(c["dim_null"]) == {"low-band filter", "high-band filter", "period-2 single pass"}
        assert all(0 <= v <= 32 for v in c["dim_null"].values())
        # a claim reading pretrained_frozen (not run) is judged on its other checks only
        conds = {ch["condition"] for ch in r["claims"]["mod_probes"]["checks"]}
        assert conds == {"learned"}
    md = (out / study.STUDY_MD).read_text()
    assert "| claim | base | wd 1 |" in md and "`train.weight_decay = 1.0`" in md
    for name in ("study_verdicts", "study_test_acc", "study_division", "study_table1"):
        assert is_our_png(out / "figures" / f"{name}.png")


def test_study_again_reuses_every_run_and_gives_the_same_verdicts(tiny_study):
    grid, out = tiny_study
    before = json.loads((out / study.STUDY_JSON).read_text())
    again = study.run_study(grid, out, workers=0, progress=False)
    assert json.loads(json.dumps(again)) == before


def test_a_regime_is_judged_as_the_registry_judges_its_runs(tiny_study):
    _, out = tiny_study
    summary = study.build(out)
    sweep_json = json.loads((out / "sweep.json").read_text())
    runs = {}
    for run in sweep_json["runs"]:
        if run["values"]["regime"]["name"] == "base":
            s = json.loads((out / "runs" / run["id"] / "summary.json").read_text())
            runs.setdefault(run["values"]["condition"]["name"], []).append(s)
    base = summary["regimes"][0]["claims"]
    for cid in ("division_of_labour", "table1", "rescue"):
        full = claims.judge(claims.BY_ID[cid], runs)  # pretrained_frozen's checks: no runs, not measurable
        ran = [c for c in full["checks"] if c["condition"] in runs and (c["op"] != "faster" or c["other"] in runs)]
        assert base[cid]["checks"] == ran
        assert base[cid]["verdict"] == claims.combine([c["outcome"] for c in ran])


def test_restricted_keeps_only_the_checks_of_conditions_that_ran():
    rescue = study.restricted(claims.BY_ID["rescue"], {"fourier_frozen"})
    assert {(c.condition, c.op) for c in rescue.checks} == {("fourier_frozen", "every >=")}  # no "faster": no learned
    assert study.restricted(claims.BY_ID["from_scratch"], {"fourier_frozen", "pretrained_frozen"}) is None
    full = study.restricted(claims.BY_ID["table1"], set(study.CONDITION_NAMES))
    assert full.checks == claims.BY_ID["table1"].checks
    judged = study.judge_regime({"fourier_frozen": []})
    assert judged["from_scratch"]["verdict"] == study.NOT_RUN


@pytest.mark.parametrize("grid, message", [
    ({"regime": REGIMES, "seed": [0]}, "exactly the keys regime, condition, seed"),
    ({"regime": [{"name": "a"}, {"train.lr": 0.1}], "condition": CONDITIONS, "seed": [0]}, "regime value must be a table with a name"),
    ({"regime": [{"name": "a"}, {"name": "a", "train.lr": 0.1}], "condition": CONDITIONS, "seed": [0]}, "names must be unique; repeated: 'a'"),
    ({"regime": REGIMES, "condition": [{"name": "mine", "embedding.kind": "learned"}], "seed": [0]}, "condition 'mine' is not a condition"),
])
def test_a_bad_study_grid_is_one_line_and_exit_2(tmp_path, capsys, grid, message):
    path = _write(tmp_path / "g.toml", grid)
    assert cli.main(["study", path, "--workers", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not (tmp_path / "out" / "runs").exists()  # refused before anything ran


def test_check_grid_accepts_the_shipped_study_grids():
    for path in sorted((Path(__file__).parents[2] / "scripts" / "study").glob("*.toml")):
        grid = load_grid(path)
        study.check_grid(grid)
        assert len(expand(grid)) % 3 == 0  # three seeds at every point

