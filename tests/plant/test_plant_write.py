"""write_plant: an ordinary run directory that every reader of a run accepts; --force semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fourier_toy.errors import CheckpointError, ConfigError
from fourier_toy.plant import PlantSpec, plant, write_plant
from fourier_toy.runs.layout import CHECKPOINT, CONFIG, METRICS, MODEL, STATE, SUMMARY
from fourier_toy.runs.read_run import read_metrics
from fourier_toy.training.loop import resume_config, train
from fourier_toy.training.open_run import load_run

SPEC = PlantSpec(max_operand=20, d_model=96)


def test_the_run_directory_has_the_trainers_files(tmp_path):
    out = write_plant(SPEC, tmp_path / "run")
    assert {p.name for p in out.iterdir()} == {CONFIG, METRICS, MODEL, STATE, CHECKPOINT, SUMMARY}
    run = load_run(out)
    model, cfg = plant(SPEC)
    assert np.array_equal(run.model.params, model.params)
    assert run.cfg == cfg and run.step == 0 and run.model.engine is None
    assert run.derived["embedding"] == {"kind": "plant"}
    assert run.derived["plant"]["spec"] == SPEC.to_dict()
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["stop_reason"] == "planted"
    assert all(summary["final"][s]["acc"] == 1.0 for s in ("train", "val", "test"))
    assert read_metrics(out)[0]["test"]["acc"] == 1.0
    assert not list(tmp_path.glob(".run.*"))  # no temporary sibling or lock left behind


def test_a_planted_run_trains_further(tmp_path):
    """`train --resume` accepts it (its manifest's config is config.json's). Only the mechanics:
    AdamW's first steps move every weight by about lr, which the hand-set weights do not survive
    unharmed."""
    out = write_plant(SPEC, tmp_path / "run")
    result = train(resume_config(out, ["train.max_steps=2", "train.eval_every=2"]), out, resume=True, progress=False)
    assert result.step == 2 and result.stop_reason == "max_steps" and load_run(out).step == 2


def test_force_replaces_a_run_and_only_a_run(tmp_path):
    out = write_plant(SPEC, tmp_path / "run")
    with pytest.raises(CheckpointError, match="already exists"):
        write_plant(SPEC, out)
    write_plant(PlantSpec(max_operand=20, d_model=96, seed=5), out, force=True)
    assert load_run(out).cfg.seed == 5
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a fourier_toy run directory"):
        write_plant(SPEC, other, force=True)
    assert (other / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_run(write_plant(SPEC, empty)).step == 0


def test_a_spec_is_required(tmp_path):
    with pytest.raises(ConfigError, match="^spec:"):
        write_plant({"max_operand": 20}, tmp_path / "run")
    with pytest.raises(ConfigError, match="^spec:"):
        plant(None)
