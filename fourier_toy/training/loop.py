"""The training loop and its run directory (DESIGN.md convention 9; the files: runs/layout.py).

Batches: epoch e visits the training split in the order of a permutation drawn from a generator
seeded with [seed, RNG_EPOCH, e] (training/batches.py), so the training position (step) is the
whole data-order state and a resumed run continues bit-identically.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fourier_toy import config as config_mod
from fourier_toy.training.backends import make_gpt, update_rule
from fourier_toy.training.build import build_model, trainable_mask
from fourier_toy.config import RNG_EPOCH, RNG_INIT, Config
from fourier_toy.errors import CheckpointError, ConfigError
from fourier_toy.training.batches import EpochBatches
from fourier_toy.training.evaluate import evaluate
from fourier_toy.nn.optim import AdamW, LRSchedule
from fourier_toy.nn.params import decay_mask
from fourier_toy.runs.files import DirLock, append_jsonl, atomic_write_json, read_jsonl, truncate_jsonl
from fourier_toy.runs.files import file_sha256, remove_leftovers, replace_durably
from fourier_toy.runs.layout import CHECKPOINT, CONFIG, METRICS, MODEL, STATE, SUMMARY, is_run_dir, pending
from fourier_toy.runs.read_run import checkpoint_file, read_checkpoint, read_config
from fourier_toy.runs.tensors import load_tensors, save_tensors
from fourier_toy.task import SPLITS, make_splits

# Training steps per GPT.train_steps call: on the fused path without clipping they are one
# hand-off to the threads, saving the Python around each step. A max_seconds budget is checked
# between calls, so a run may take up to STEPS_PER_CALL - 1 steps past it.
STEPS_PER_CALL = 8
RESUMABLE_KEYS = {"train.max_steps", "train.max_epochs", "train.max_seconds", "train.target_accuracy",
                  "train.eval_every", "train.checkpoint_every"}


def check_out_dir(out: Path, force: bool) -> bool:
    """Whether `out` holds a run to replace; raises if it may not be replaced."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise CheckpointError(f"--out: {str(out)!r} already exists; pass --resume {out} to continue it "
                                  "or --force to replace it")
        if not (out.is_dir() and is_run_dir(out)):
            raise CheckpointError(f"--force: {str(out)!r} is not a fourier_toy run directory; refusing to replace it")
        return True
    return False


def _has_checkpoint(run: Path) -> bool:
    """Whether the run directory holds a checkpoint: a committed manifest, or (written before
    manifests) its weights and optimizer state."""
    return is_run_dir(run) and ((run / CHECKPOINT).is_file() or ((run / MODEL).is_file() and (run / STATE).is_file()))


class _OutDir:
    """A run's hold on its directory: the lock, a hidden sibling ``.NAME.lock`` (a sibling, so that
    it also covers the moment the directory is swapped), taken in `prepare` and held to the end.

    Replacing a run (force), `prepare` renames the old run to the hidden sibling
    ``.NAME.replaced-PID``; on leaving, the old run is deleted if the new one succeeded or has
    written a checkpoint, and otherwise put back in place of the new one. A set-aside run left by
    a writer that died is settled the same way by the next writer to take the lock.
    """

    def __init__(self, out: Path, resume: bool, force: bool):
        self.out, self.resume, self.force = out, resume, force
        where = Path(os.path.abspath(out))
        self.lock = DirLock(where.parent / f".{where.name}.lock", f"{'--resume' if resume else '--out'} {str(out)!r}")
        self.aside: Path | None = None
        self.fresh = False

    def __enter__(self) -> "_OutDir":
        return self

    def prepare(self) -> None:
        out = self.out
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"--out: cannot create {str(out.parent)!r} ({e.strerror or e})") from None
        self.lock.acquire()
        for left in sorted(out.parent.glob(f".{glob.escape(out.name)}.replaced-*")):
            self._settle(left, keep_new=_has_checkpoint(out))
        # A run directory this run creates and that fails before its first checkpoint holds nothing
        # to resume: it is removed on the way out, so that it never blocks the next `train --out`.
        self.fresh = not self.resume and (self.force or not out.exists())
        if not self.resume and check_out_dir(out, self.force):
            self.aside = out.parent / f".{out.name}.replaced-{os.getpid()}"
            try:
                os.rename(out, self.aside)
            except OSError as e:
                self.aside = None
                raise CheckpointError(f"--force: cannot move {str(out)!r} aside ({e.strerror or e})") from None

    def _settle(self, aside: Path, keep_new: bool) -> None:
        if keep_new:
            shutil.rmtree(aside, ignore_errors=True)
        else:
            if self.out.exists():
                shutil.rmtree(self.out)
            os.rename(aside, self.out)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.aside is not None:
                self._settle(self.aside, keep_new=exc_type is None or _has_checkpoint(self.out))
                self.aside = None
            elif exc_type is not None and self.fresh and not _has_checkpoint(self.out):
                shutil.rmtree(self.out, ignore_errors=True)
        finally:
            self.lock.release()


def load_run_config(run: Path) -> tuple[Config, dict]:
    """(the run's Config, its "derived" facts) from its config.json."""
    data = read_config(run)
    path = Path(run) / CONFIG
    derived = data.pop("derived", {})
    if not isinstance(derived, dict):
        raise CheckpointError(f"{path}: invalid config (derived: expected an object, got {type(derived).__name__})")
    missing = [key for key in (*config_mod.SECTIONS, "seed") if key not in data]
    if missing:
        raise CheckpointError(f"{path}: invalid config (missing {', '.join(missing)}; a run's config "
                              f"holds every section and the seed)")
    try:
        return config_mod.from_dict(data), derived
    except ConfigError as e:
        raise CheckpointError(f"{path}: invalid config ({e})") from None


@dataclass
class Budget:
    max_steps: int
    max_epochs: int
    max_seconds: float
    steps_per_epoch: int

    def done(self, step: int, elapsed: float) -> str | None:
        if self.max_steps and step >= self.max_steps:
            return "max_steps"
        if self.max_epochs and step >= self.max_epochs * self.steps_per_epoch:
            return "max_epochs"
        if self.max_seconds and elapsed >= self.max_seconds:
            return "max_seconds"
        return None


@dataclass
class RunResult:
    run_dir: Path
    step: int
    stop_reason: str
    final: dict = field(default_factory=dict)  # split -> evaluate() dict
    history: list = field(default_factory=list)
    diverged: dict | None = None  # {"step": the step whose loss was non-finite, "loss": "nan"/"inf"/"-inf"}

    def divergence_line(self) -> str | None:
        """One line for a diverged run (None otherwise): the step and the non-finite loss."""
        if self.stop_reason != "diverged":
            return None
        d = self.diverged or {"step": self.step + 1, "loss": "non-finite"}
        return (f"{self.run_dir}: training diverged at step {d['step']}: loss {d['loss']} "
                f"(the run keeps the weights of step {self.step})")

    def summary_line(self) -> str:
        parts = [f"{self.run_dir}: step {self.step} ({self.stop_reason})"]
        for s in SPLITS:
            r = self.final.get(s)
            if r and r["n"]:
                parts.append(f"{s} acc {r['acc']:.4f} (+-2 {r['acc_pm2']:.4f}, +-10 {r['acc_pm10']:.4f})")
        return "; ".join(parts)


def _progress(total, disable):
    from tqdm.auto import tqdm

    return tqdm(total=total or None, disable=disable, unit="step", dynamic_ncols=True, leave=False)


def train(cfg: Config, out, resume: bool = False, force: bool = False, progress: bool | None = None) -> RunResult:
    """Train `cfg` into run directory `out` (or continue it when resume=True).

    One writer per run directory: the run holds `out`'s lock (_OutDir) from the moment it prepares
    the directory to its end. With force=True an existing run is replaced only once the new one has
    a checkpoint; a new run that fails before that leaves the old one as it was.
    progress: a progress bar on stderr; default when stderr is a terminal.
    """
    out = Path(out)
    if not resume:
        check_out_dir(out, force)  # refuse before building anything; checked again under the lock
    with _OutDir(out, resume, force) as claim:
        return _train(cfg, out, resume, claim, progress)


def _train(cfg: Config, out: Path, resume: bool, claim: "_OutDir", progress: bool | None) -> RunResult:
    splits = make_splits(cfg.task, cfg.seed)
    if resume:
        # Every weight comes from the checkpoint: no number rows are built (a transplant's
        # embedding.source is not read again, and need not exist any more).
        model = make_gpt(cfg.model, cfg.task.n_numbers, rng=np.random.default_rng([cfg.seed, RNG_INIT]))
        embed_info = None
    else:
        model, embed_info = build_model(cfg)
    tc = cfg.train
    batches = EpochBatches(len(splits["train"]), tc.batch_size, cfg.seed, RNG_EPOCH)
    steps_per_epoch = batches.steps_per_epoch
    total = tc.max_steps or (tc.max_epochs * steps_per_epoch) or 1
    if tc.schedule != "constant" and not (tc.max_steps or tc.max_epochs):
        raise ConfigError(f"train.schedule: {tc.schedule!r} needs train.max_steps or train.max_epochs to decay over")
    schedule = LRSchedule(tc.schedule, tc.lr, max(total, tc.warmup_steps, 1), tc.warmup_steps, tc.min_lr_ratio)
    opt = AdamW(model.layout.size, tc.lr, tuple(tc.betas), tc.eps, tc.weight_decay,
                decay_mask=decay_mask(model.layout),
                trainable_mask=trainable_mask(model, cfg.embedding.freeze),
                update=update_rule(model))
    derived = {"n_numbers": cfg.task.n_numbers, "vocab_size": model.vocab_size,
               "n_params": int(model.layout.size), "split_sizes": {s: len(splits[s]) for s in SPLITS},
               "embedding": embed_info}

    step, elapsed = 0, 0.0
    claim.prepare()  # only now that the config has built a model: the lock, and the old run set aside
    if resume:
        step, elapsed = _load_checkpoint(out, _open_checkpoint(out), model, opt)
        truncate_jsonl(out / METRICS, lambda r: r.get("step", 0) <= step)
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CONFIG, {**cfg.to_dict(), "derived": derived})
        (out / METRICS).touch()
    history = read_jsonl(out / METRICS)

    budget = Budget(tc.max_steps, tc.max_epochs, tc.max_seconds, steps_per_epoch)
    train_split = splits["train"]
    if progress is None:
        progress = sys.stderr.isatty()
    bar = _progress(budget.max_steps or (budget.max_epochs * steps_per_epoch), not progress)
    bar.update(step)
    t0 = time.perf_counter() - elapsed
    stop = budget.done(step, elapsed)
    losses, diverged = [], None
    while stop is None:
        k = _steps_in_call(step, step % steps_per_epoch, len(train_split), tc, budget)
        idx = batches.take(step, k)
        taken = model.train_steps(train_split.tokens[idx], train_split.targets[idx], opt,
                                  [schedule(step + s) for s in range(k)], tc.grad_clip)
        finite = [loss for loss in taken if math.isfinite(loss)]  # a non-finite one ends them, unapplied
        step += len(finite)
        losses += finite
        bar.update(len(finite))
        if len(finite) < len(taken):
            stop = "diverged"
            diverged = {"step": step + 1, "loss": str(next(loss for loss in taken if not math.isfinite(loss)))}
            break
        elapsed = time.perf_counter() - t0
        stop = budget.done(step, elapsed)
        if step % tc.eval_every == 0 or stop:
            record = _eval_record(model, splits, step, steps_per_epoch, elapsed, schedule(step - 1), losses)
            losses = []
            append_jsonl(out / METRICS, record)
            history.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", test=f"{record['test']['acc']:.3f}"
                            if record["test"]["n"] else "-")
            if tc.target_accuracy and record[tc.target_split]["acc"] >= tc.target_accuracy and not stop:
                stop = "target_accuracy"
        if step % tc.checkpoint_every == 0 or stop:
            _save_checkpoint(out, cfg, model, opt, step, elapsed)
    bar.close()
    if stop == "diverged":
        _save_checkpoint(out, cfg, model, opt, step, elapsed)
    final = {s: evaluate(model, splits[s], with_errors=True) for s in SPLITS}
    summary = {"step": step, "stop_reason": stop, "elapsed_seconds": elapsed, "final": final,
               "steps_to": steps_to(history)}
    if diverged:
        summary["diverged"] = diverged
    atomic_write_json(out / SUMMARY, summary)
    return RunResult(out, step, stop, final, history, diverged)


def _steps_in_call(step: int, pos: int, n_train: int, tc, budget: Budget) -> int:
    """How many steps, from `step` (batch `pos` of its epoch), one GPT.train_steps call takes: at
    most STEPS_PER_CALL, of full batches of one epoch (a smaller last batch goes alone), and none
    past the next evaluation, checkpoint or max_steps."""
    full = n_train // tc.batch_size
    k = min(STEPS_PER_CALL, full - pos) if pos < full else 1
    for every in (tc.eval_every, tc.checkpoint_every):
        k = min(k, every - step % every)
    if budget.max_steps:
        k = min(k, budget.max_steps - step)
    return max(k, 1)


def steps_to(history: list[dict], split: str = "test", levels=(0.9, 0.99)) -> dict:
    """The first evaluated step at which `split` accuracy reached each level (None: not reached)."""
    out = {}
    for level in levels:
        hit = next((r["step"] for r in history if (r.get(split) or {}).get("acc") is not None
                    and r[split]["acc"] >= level), None)
        out[f"{split}_{level:g}"] = hit
    return out


def _eval_record(model, splits, step, steps_per_epoch, elapsed, lr, losses) -> dict:
    record = {"step": step, "epoch": step / steps_per_epoch, "elapsed": round(elapsed, 3), "lr": lr,
              "train_loss": float(np.mean(losses)) if losses else None}
    for s in SPLITS:
        record[s] = evaluate(model, splits[s])
    return record


def _save_checkpoint(out: Path, cfg: Config, model, opt: AdamW, step: int, elapsed: float) -> None:
    """Commit a checkpoint by one rename (the scheme: runs/layout.py): both files under their
    pending names, then the manifest naming them with their sha256, then the renames into place."""
    _settle_checkpoint(out, read_checkpoint(out))
    state = {f"opt.{k}": v for k, v in opt.state_dict().items()}
    state["step"] = np.array(step, dtype=np.int64)
    state["elapsed"] = np.array(elapsed, dtype=np.float64)
    save_tensors(out / pending(STATE), state)
    save_tensors(out / pending(MODEL), {k: v.copy() for k, v in model.weights.items()},
                 {"step": str(step), "format": "pt"})
    manifest = {"step": step, "config": cfg.to_dict(),
                "state": {"file": STATE, "sha256": file_sha256(out / pending(STATE))},
                "model": {"file": MODEL, "sha256": file_sha256(out / pending(MODEL))}}
    atomic_write_json(out / CHECKPOINT, manifest)  # the commit
    _settle_checkpoint(out, manifest)


def _settle_checkpoint(out: Path, manifest: dict | None) -> None:
    """Finish the commit of `manifest` (rename its pending files into place) and delete what no
    commit names: other pending files and the temporary files of interrupted writes."""
    for role, name in (("state", STATE), ("model", MODEL)):
        path = out / pending(name)
        if not path.exists():
            continue
        if manifest is not None and manifest[role]["file"] == name and file_sha256(path) == manifest[role]["sha256"]:
            replace_durably(path, out / name)
        else:
            try:
                path.unlink()
            except OSError as exc:
                raise CheckpointError(f"{path}: cannot remove a leftover file ({exc.strerror or exc})") from None
    remove_leftovers(out, (CONFIG, METRICS, SUMMARY, CHECKPOINT, STATE, MODEL, pending(STATE), pending(MODEL)))


def _open_checkpoint(out: Path) -> dict | None:
    """The committed checkpoint's manifest (None: a run written before manifests, whose two files
    exist), once config.json is known to say what the checkpoint was made with."""
    try:
        manifest = read_checkpoint(out)
    except CheckpointError as err:
        raise CheckpointError(f"--resume: {err}") from None
    if manifest is None:
        if not (out / MODEL).is_file() or not (out / STATE).is_file():
            raise CheckpointError(f"--resume: {str(out)!r} has no checkpoint yet ({MODEL} and {STATE})")
        return None
    on_disk = read_config(out)
    on_disk.pop("derived", None)
    diff = _first_difference(on_disk, manifest["config"])
    if diff is not None:
        key, ours, theirs = diff
        raise CheckpointError(f"--resume: {out / CONFIG}: {key} is {ours} but the checkpoint of step "
                              f"{manifest['step']} was made with {theirs}; the file was edited after the run "
                              f"started (only the budget keys may change, with --set)")
    return manifest


_MISSING = object()


def _first_difference(a: dict, b: dict, prefix: str = "") -> tuple[str, str, str] | None:
    """(dotted key, a's value, b's value) of the first field, in sorted key order, where the JSON
    objects a and b differ, RESUMABLE_KEYS aside; None when they agree."""
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if name in RESUMABLE_KEYS:
            continue
        x, y = a.get(key, _MISSING), b.get(key, _MISSING)
        if isinstance(x, dict) and isinstance(y, dict):
            inner = _first_difference(x, y, name + ".")
            if inner is not None:
                return inner
        elif x != y or type(x) is not type(y):
            return name, *("missing" if v is _MISSING else json.dumps(v) for v in (x, y))
    return None


def _state_scalar(path: Path, state: dict, key: str, kinds: str):
    """state[key] as one number of a dtype kind in `kinds`, finite and >= 0; CheckpointError naming the file."""
    arr = state.get(key)
    if arr is None:
        raise CheckpointError(f"{path}: no tensor {key!r}")
    if arr.size != 1 or arr.ndim > 1 or arr.dtype.kind not in kinds:
        raise CheckpointError(f"{path}: tensor {key!r} must hold one {'integer' if kinds == 'iu' else 'number'}, "
                              f"got {arr.dtype} {arr.shape}")
    value = arr.reshape(-1)[0].item()
    if not math.isfinite(value) or value < 0:
        raise CheckpointError(f"{path}: tensor {key!r} must be finite and >= 0, got {value}")
    return value


def _load_checkpoint(out: Path, manifest: dict | None, model, opt: AdamW) -> tuple[int, float]:
    from fourier_toy.runs.read_run import checked_step, read_metrics

    if manifest is None:  # a run written before manifests: its two files must agree on the step
        model_path, state_path = out / MODEL, out / STATE
        weights, meta = load_tensors(model_path)
        state, _ = load_tensors(state_path)
        step = int(_state_scalar(state_path, state, "step", "iu"))
        if str(step) != meta.get("step"):
            raise CheckpointError(f"{out / MODEL}: weights are from step {meta.get('step')} but the optimizer "
                                  f"state from step {step}; the checkpoint was interrupted")
    else:
        model_path = checkpoint_file(out, manifest, "model")
        weights, meta = load_tensors(model_path)
        checked_step(model_path, meta, manifest)
        state_path = checkpoint_file(out, manifest, "state")
        state, _ = load_tensors(state_path)
        step = int(_state_scalar(state_path, state, "step", "iu"))
        if step != manifest["step"]:
            raise CheckpointError(f"{state_path}: holds step {step} but {CHECKPOINT} says {manifest['step']}")
    elapsed = float(_state_scalar(state_path, state, "elapsed", "iuf"))
    read_metrics(out / METRICS)  # checked before anything is rewritten
    from fourier_toy.nn.params import pack

    params = pack(model.layout, weights, model.params.dtype, where=str(model_path))
    try:
        opt.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("opt.")})
    except CheckpointError as err:
        raise CheckpointError(f"{state_path}: {err}") from None
    if manifest is not None:
        _settle_checkpoint(out, manifest)
    model.params[:] = params
    return step, elapsed


def resume_config(run: Path, overrides=()) -> Config:
    """The run's own config, with only budget keys overridable (anything else would change the run)."""
    try:
        cfg, _ = load_run_config(run)
    except CheckpointError as err:
        raise CheckpointError(f"--resume: {err}") from None
    for text in overrides:
        key, _ = config_mod.parse_override(text)
        if key not in RESUMABLE_KEYS:
            raise ConfigError(f"--set: {key!r} cannot change on --resume; allowed: {', '.join(sorted(RESUMABLE_KEYS))}")
    return config_mod.apply_overrides(cfg, overrides)
