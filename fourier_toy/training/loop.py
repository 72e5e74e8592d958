"""The training loop and its run directory (DESIGN.md convention 9; the files: runs/layout.py).

Batches: epoch e visits the training split in the order of a permutation drawn from a generator
seeded with [seed, RNG_EPOCH, e] (training/batches.py), so the training position (step) is the
whole data-order state and a resumed run continues bit-identically.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fourier_toy import config as config_mod
from fourier_toy.training.backends import update_rule
from fourier_toy.training.build import build_model, trainable_mask
from fourier_toy.config import RNG_EPOCH, Config
from fourier_toy.errors import CheckpointError, ConfigError
from fourier_toy.training.batches import EpochBatches
from fourier_toy.training.evaluate import evaluate
from fourier_toy.nn.optim import AdamW, LRSchedule
from fourier_toy.nn.params import decay_mask
from fourier_toy.runs.files import append_jsonl, atomic_write_json, read_jsonl, truncate_jsonl
from fourier_toy.runs.layout import CONFIG, METRICS, MODEL, STATE, SUMMARY, is_run_dir
from fourier_toy.runs.read_run import read_config
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


def load_run_config(run: Path) -> tuple[Config, dict]:
    """(the run's Config, its "derived" facts) from its config.json."""
    data = read_config(run)
    derived = data.pop("derived", {})
    try:
        return config_mod.from_dict(data), derived
    except ConfigError as e:
        raise CheckpointError(f"{Path(run) / CONFIG}: invalid config ({e})") from None


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

    progress: a progress bar on stderr; default when stderr is a terminal.
    """
    out = Path(out)
    replace = False if resume else check_out_dir(out, force)
    splits = make_splits(cfg.task, cfg.seed)
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
    if resume:
        step, elapsed = _load_checkpoint(out, model, opt)
        truncate_jsonl(out / METRICS, lambda r: r.get("step", 0) <= step)
    else:
        # Only now that the config has built a model is the old run removed.
        if replace:
            shutil.rmtree(out)
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
    losses = []
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
            _save_checkpoint(out, model, opt, step, elapsed)
    bar.close()
    if stop == "diverged":
        _save_checkpoint(out, model, opt, step, elapsed)
    final = {s: evaluate(model, splits[s], with_errors=True) for s in SPLITS}
    summary = {"step": step, "stop_reason": stop, "elapsed_seconds": elapsed, "final": final,
               "steps_to": steps_to(history)}
    atomic_write_json(out / SUMMARY, summary)
    return RunResult(out, step, stop, final, history)


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


def _save_checkpoint(out: Path, model, opt: AdamW, step: int, elapsed: float) -> None:
    # The state file goes first and both carry the step: a crash between the two writes is caught
    # on resume as a step mismatch instead of silently pairing new weights with old moments.
    state = {f"opt.{k}": v for k, v in opt.state_dict().items()}
    state["step"] = np.array(step, dtype=np.int64)
    state["elapsed"] = np.array(elapsed, dtype=np.float64)
    save_tensors(out / STATE, state)
    save_tensors(out / MODEL, {k: v.copy() for k, v in model.weights.items()}, {"step": str(step), "format": "pt"})


def _load_checkpoint(out: Path, model, opt: AdamW) -> tuple[int, float]:
    if not (out / MODEL).is_file() or not (out / STATE).is_file():
        raise CheckpointError(f"--resume: {str(out)!r} has no checkpoint yet ({MODEL} and {STATE})")
    weights, meta = load_tensors(out / MODEL)
    state, _ = load_tensors(out / STATE)
    step = int(state["step"]) if "step" in state else -1
    if str(step) != meta.get("step"):
        raise CheckpointError(f"{out / MODEL}: weights are from step {meta.get('step')} but the optimizer "
                              f"state from step {step}; the checkpoint was interrupted")
    from fourier_toy.nn.params import pack

    model.params[:] = pack(model.layout, weights, model.params.dtype)
    opt.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("opt.")})
    return step, float(state["elapsed"])


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
