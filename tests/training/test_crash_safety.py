"""A checkpoint survives a kill at any instant (the commit scheme: runs/layout.py).

Every file-system step of one checkpoint is a write boundary: each fsync and each rename, and the
moment the checkpoint call returns. For each, a run is killed just before it (the patched call
raises a BaseException, after which nothing else of the process runs: no cleanup, no further
write), then resumed; the resumed run must end with the weights and optimizer state of a run
that was never interrupted, bit for bit. One more run is killed with a real SIGKILL.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fourier_toy import config
from fourier_toy.errors import CheckpointError
from fourier_toy.runs.files import read_jsonl
from fourier_toy.runs.layout import CHECKPOINT, CONFIG, METRICS, MODEL, STATE
from fourier_toy.runs.read_run import read_weights
from fourier_toy.runs.tensors import load_tensors
from fourier_toy.training import loop
from fourier_toy.training.loop import resume_config, train

OVERRIDES = ("model.backend=numpy", "train.max_steps=24", "train.eval_every=4", "train.checkpoint_every=8")
PREVIOUS, TARGET = 8, 16  # the checkpoint killed is step 16's; step 8's is the one before it
N_BOUNDARIES = 14  # 3 atomic writes x (fsync, rename, fsync of the directory) + 2 renames x 2 + return


def cfg(*extra):
    return config.apply_overrides(config.from_preset("tiny"), [*OVERRIDES, *extra])


class Killed(BaseException):
    """A kill -9 inside one process: nothing after it runs."""


class Killer:
    """Records the file-system events of step TARGET's checkpoint and kills the run before the
    `at`-th of them (at=None: records only)."""

    def __init__(self, run: Path, at: int | None):
        self.run, self.at, self.events, self.armed, self.dead = run, at, [], False, False

    def _event(self, label: str):
        if self.dead:
            raise Killed
        if self.armed:
            self.events.append(label)
            if len(self.events) == self.at:
                self.dead = True
                raise Killed

    def install(self, mp) -> None:
        real = {name: getattr(os, name) for name in ("replace", "fsync", "unlink")}
        save = loop._save_checkpoint

        def replace(src, dst, *a, **k):
            self._event(f"rename -> {Path(dst).name}")
            return real["replace"](src, dst, *a, **k)

        def fsync(fd):
            self._event("fsync")
            return real["fsync"](fd)

        def unlink(path, *a, **k):
            if self.dead and Path(path).parent == self.run:
                return  # a killed process removes none of its temporary files
            return real["unlink"](path, *a, **k)

        def save_checkpoint(out, cfg, model, opt, step, elapsed):
            self.armed = step == TARGET
            try:
                save(out, cfg, model, opt, step, elapsed)
                self._event("return")
            finally:
                self.armed = False

        mp.setattr(os, "replace", replace)
        mp.setattr(os, "fsync", fsync)
        mp.setattr(os, "unlink", unlink)
        mp.setattr(loop, "_save_checkpoint", save_checkpoint)


def tensors(path):
    return load_tensors(path)[0]


def assert_same(a: Path, b: Path):
    for name in (MODEL, STATE):
        ta, tb = tensors(a / name), tensors(b / name)
        assert sorted(ta) == sorted(tb)
        for key in set(ta) - {"elapsed"}:  # wall-clock seconds: the one thing a resumed run may differ in
            assert ta[key].tobytes() == tb[key].tobytes(), f"{name}: {key}"
    assert [r["step"] for r in read_jsonl(a / METRICS)] == [r["step"] for r in read_jsonl(b / METRICS)]


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith((".next", ".tmp")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the write boundaries of its step-16 checkpoint."""
    run = tmp_path_factory.mktemp("crash") / "straight"
    killer = Killer(run, at=None)
    with pytest.MonkeyPatch.context() as mp:
        killer.install(mp)
        train(cfg(), run, progress=False)
    return run, killer.events


def test_the_boundaries_of_one_checkpoint(reference):
    _, events = reference
    assert len(events) == N_BOUNDARIES, events
    assert events.count(f"rename -> {CHECKPOINT}") == 1
    renames = [e.removeprefix("rename -> ") for e in events if e.startswith("rename")]
    # the two pending files, the manifest (the commit), then the pending files into place
    assert renames == [f"{STATE}.next", f"{MODEL}.next", CHECKPOINT, STATE, MODEL]
    assert events[-1] == "return"


@pytest.mark.parametrize("at", range(1, N_BOUNDARIES + 1))
def test_kill_at_each_write_boundary_then_resume(tmp_path, reference, at):
    straight, events = reference
    run = tmp_path / "run"
    killer = Killer(run, at)
    with pytest.MonkeyPatch.context() as mp:
        killer.install(mp)
        with pytest.raises(Killed):
            train(cfg(), run, progress=False)
    # Either the previous checkpoint or the new one, by whether the manifest's rename happened.
    committed = TARGET if at > events.index(f"rename -> {CHECKPOINT}") + 1 else PREVIOUS
    assert read_weights(run)[1]["step"] == str(committed)

    result = train(resume_config(run), run, resume=True, progress=False)
    assert result.step == 24 and result.stop_reason == "max_steps"
    assert_same(straight, run)
    assert leftovers(run) == []


def test_real_sigkill_at_a_random_moment(tmp_path):
    overrides = [*OVERRIDES, "train.max_steps=120", "train.checkpoint_every=1", "train.eval_every=20"]
    straight, run = tmp_path / "straight", tmp_path / "run"
    script = textwrap.dedent(f"""
        from fourier_toy import config
        from fourier_toy.training.loop import train
        train(config.apply_overrides(config.from_preset("tiny"), {overrides!r}), {str(run)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not (run / CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        delay = random.uniform(0.0, 0.6)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    train(config.apply_overrides(config.from_preset("tiny"), overrides), straight, progress=False)
    print(f"killed {delay:.3f} s after the first checkpoint; committed: step {read_weights(run)[1]['step']}")
    train(resume_config(run), run, resume=True, progress=False)
    assert_same(straight, run)
    assert leftovers(run) == []


def test_resume_refuses_a_hand_edited_config_but_not_a_budget_key(tmp_path):
    run = tmp_path / "run"
    train(cfg("train.max_steps=8"), run, progress=False)
    saved = json.loads((run / CONFIG).read_text())
    edited = json.loads(json.dumps(saved))
    edited["train"]["lr"] = saved["train"]["lr"] * 2
    (run / CONFIG).write_text(json.dumps(edited))
    with pytest.raises(CheckpointError) as info:
        train(resume_config(run), run, resume=True, progress=False)
    message = str(info.value)
    assert "\n" not in message and str(run / CONFIG) in message and "train.lr" in message
    edited = json.loads(json.dumps(saved))
    edited["train"]["max_steps"] = 16  # a budget key: --resume may change it
    (run / CONFIG).write_text(json.dumps(edited))
    assert train(resume_config(run), run, resume=True, progress=False).step == 16


def test_transplant_resumes_after_its_source_moved(tmp_path):
    source = tmp_path / "rows.npy"
    np.save(source, np.random.default_rng(0).standard_normal((30, 16)))
    transplant = ("embedding.kind=transplant", f"embedding.source={source}")
    train(cfg(*transplant), tmp_path / "straight", progress=False)
    run = tmp_path / "run"
    train(cfg(*transplant, "train.max_steps=8"), run, progress=False)
    source.rename(tmp_path / "moved.npy")
    train(resume_config(run, ["train.max_steps=24"]), run, resume=True, progress=False)
    assert_same(tmp_path / "straight", run)
