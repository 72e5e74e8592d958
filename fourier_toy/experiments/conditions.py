"""The paper's experiments in toy form: embedding conditions x seeds, each trained and diagnosed.

`reproduce` runs one sweep (sweep.py) whose grid is the list of conditions below times the seeds;
every worker trains its run and then diagnoses it (spectra, logit lens, module-logit bands, the
null-space filter table, single-pass parity, probes), so the analysis is parallel too. Each run's
full diagnostics go to `diagnostics.json` in its run directory and its headline numbers into its
`summary.json` under "diagnostics"; report.py turns them into the side-by-side report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from fourier_toy import config as config_mod
from fourier_toy.errors import ConfigError
from fourier_toy.runs.layout import DIAGNOSTICS, SUMMARY


@dataclass(frozen=True)
class Condition:
    name: str
    label: str
    values: dict  # dotted config keys

    def as_grid_value(self) -> dict:
        return {"name": self.name, **self.values}


# The pre-trained rows `reproduce` transplants unless told otherwise: a real pre-trained model's,
# shipped with the package (embeddings/packaged.py), as the paper transplants GPT-2's.
DEFAULT_SOURCE = "whisper"
SOURCE_LABELS = {"whisper": "Whisper tiny.en rows", "toy": "the built-in digits-pre-trained toy"}


def conditions(source: str) -> list[Condition]:
    """Every embedding condition the paper compares, with `source` as the pre-trained one."""
    src = SOURCE_LABELS.get(source) or Path(source).name
    return [
        Condition("learned", "learned, from scratch", {"embedding.kind": "learned", "embedding.freeze": False}),
        Condition("fourier_frozen", "Fourier-initialized, frozen", {"embedding.kind": "fourier", "embedding.freeze": True}),
        Condition("fourier", "Fourier-initialized, trained", {"embedding.kind": "fourier", "embedding.freeze": False}),
        Condition("pretrained_frozen", f"transplanted ({src}), frozen",
                  {"embedding.kind": "transplant", "embedding.source": source, "embedding.freeze": True}),
        Condition("pretrained", f"transplanted ({src}), trained",
                  {"embedding.kind": "transplant", "embedding.source": source, "embedding.freeze": False}),
    ]


# The training budget of each preset's experiments: a step budget, not a convergence target, since
# from-scratch models may never converge (DESIGN.md, "Presets"). Runs stop early once the held-out
# val split is solved. The paper budget (3,000 steps of 512, about 55 epochs of its 27k training
# pairs) takes about 10 h for its 15 runs on 2 cores at d_model 640 (docs/regimes.md); --set
# train.max_steps=... asks for another.
EXPERIMENT_TRAIN = {
    "quick": {"max_steps": 1000, "eval_every": 100, "target_accuracy": 0.999, "target_split": "val"},
    "mechanism": {"max_steps": 1000, "eval_every": 100, "target_accuracy": 0.999, "target_split": "val"},
    "paper": {"max_steps": 3000, "eval_every": 250, "target_accuracy": 0.999, "target_split": "val",
              "max_seconds": 0.0},
    "tiny": {"max_steps": 60, "eval_every": 20},
}


# The preset whose regime measures each claim (docs/regimes.md, the regime study): quick's filters
# leave 31 of 128 null dimensions (10 for the period-2 pass) and its 2 layers give the lens two
# points, so the mechanism claims are measured by `mechanism` (every filter >= 25% of d_model, 4
# layers); quick measures the embedding claims in two minutes. `paper` measures all of them.
MEASURED_BY = {"embedding_spectra": "quick", "rescue": "quick", "from_scratch": "quick", "mod_probes": "quick",
               "division_of_labour": "mechanism", "table1": "mechanism", "error_types": "mechanism",
               "single_pass_parity": "mechanism", "logit_lens": "mechanism"}


def measured_by(claim_id: str) -> str:
    """The presets that measure a claim, as the reports print them (paper measures every claim)."""
    preset = MEASURED_BY.get(claim_id)
    return f"{preset}, paper" if preset else ""


# Seeds per condition: the claims' t intervals need several (claims.py, MIN_SEEDS); three keep the
# quick experiments within two minutes on 2 cores.
DEFAULT_SEEDS = 3


def grid(preset: str = "quick", seeds: int = DEFAULT_SEEDS, source: str = DEFAULT_SOURCE, overrides=()):
    """The reproduce grid: conditions x seeds on the preset, with the experiment budget."""
    from fourier_toy.experiments.grid import Grid

    if preset not in EXPERIMENT_TRAIN:
        raise ConfigError(f"--preset: expected one of {', '.join(EXPERIMENT_TRAIN)}, got {preset!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
        raise ConfigError(f"--seeds: expected an integer in [1, 100], got {seeds!r}")
    base = config_mod.apply_overrides(config_mod.from_preset(preset),
                                      [f"train.{k}={json.dumps(v)}" for k, v in EXPERIMENT_TRAIN[preset].items()])
    base = config_mod.apply_overrides(base, overrides)
    base_dict = base.to_dict()
    base_dict.pop("seed")
    return Grid(preset, base_dict, [("condition", [c.as_grid_value() for c in conditions(source)]),
                                    ("seed", list(range(seeds)))])


# ---- per-run diagnostics (runs inside the sweep's workers) ---------------------------------------

def headline(diag: dict) -> dict:
    """The numbers report.py aggregates, from one run's full diagnostics."""
    spec = diag["spectrum"]["matrices"][0]  # wte's number rows
    key = {f"{k['period']:g}": k["prominence"] for k in spec["key_periods"]}
    # Whether the outlier scan can find all of periods 10, 5, 2.5, 2 at this N; where it cannot,
    # n_key_outliers = 0 says nothing about the embedding.
    detectable = spec.get("key_periods_detectable")
    if detectable is None:  # diagnostics written before the flag came from a scan of k >= 9 only
        detectable = all(k["k"] is not None and k["k"] >= 9 for k in spec["key_periods"])
    lens = diag["lens"]
    mods = lens["modules"]
    n = len(mods)
    table = {f"{r['modules']}|{r['removed']}": {
        "acc": r["acc"], "loss": r["loss"], "dim_null": r["dim_null"],
        "frac_x10": r["errors"]["frac_multiple_of_10"], "frac_below_6": r["errors"]["frac_below_6"],
        "n_errors": r["errors"]["n_errors"]} for r in diag["ablate"]["rows"]}
    sp = diag["ablate"]["single_pass"][0]
    probes = {f"mod{p['T']}": p["kappa"] for p in diag["probe"]["embedding"][0]["probes"]}
    return {
        "embedding": {"prominence": key, "n_key_outliers": sum(bool(k["outlier"]) for k in spec["key_periods"]),
                      "key_periods_detectable": bool(detectable), "high_frac": spec["high_frac"]},
        "modules": {"attn_high": _mean([m["attn_high"] for m in mods]), "mlp_high": _mean([m["mlp_high"] for m in mods]),
                    "attn_high_by_layer": [m["attn_high"] for m in mods],
                    "mlp_high_by_layer": [m["mlp_high"] for m in mods], "n_layers": n},
        "lens": {"acc": [x["acc"] for x in lens["lens"]], "acc_pm2": [x["acc_pm2"] for x in lens["lens"]],
                 "acc_pm10": [x["acc_pm10"] for x in lens["lens"]]},
        "ablation": table,
        "single_pass": {"period": sp["period"], "parity_acc": sp["parity_acc"], "acc": sp["acc"],
                        "dim_null": sp["dim_null"]},
        "probe_kappa": probes,
        "basis": {k: lens[k] for k in ("basis", "N", "tau")} | {"d": lens["d"]},
    }


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def diagnose_run(run_dir) -> dict:
    """Every diagnostic of one run (numpy backend, test split), written to diagnostics.json."""
    import numpy as np

    from fourier_toy.analysis.diagnose import ablate_report, lens_report, probe_report, spectrum_report
    from fourier_toy.training.open_run import load_run
    from fourier_toy.runs.files import atomic_write_json

    t0 = time.perf_counter()
    run = load_run(run_dir, backend="numpy")
    diag = {
        "spectrum": spectrum_report(run),
        "lens": lens_report(run),
        "ablate": ablate_report(run, periods=(2,)),
        "probe": probe_report(run, rng=np.random.default_rng(0)),
    }
    diag["seconds"] = time.perf_counter() - t0
    atomic_write_json(Path(run_dir) / DIAGNOSTICS, diag)
    return diag


def train_and_diagnose(config: dict, run_dir: str, threads=None) -> dict:
    """The sweep runner of `reproduce`: sweep.run_point, then the diagnostics of the finished run,
    whose headline numbers are added to its summary.json (so sweep-report shows them too)."""
    from fourier_toy.experiments.sweep import run_point

    record = run_point(config, run_dir, threads)
    if record.get("status") != "ok":
        return record
    try:
        record["diagnostics"] = ensure_diagnosed(run_dir)
    except Exception as e:  # noqa: BLE001 - a failed diagnosis is reported, the sweep goes on
        record.update(status="failed", error=f"diagnostics: {type(e).__name__}: {e}")
    return record


def ensure_diagnosed(run_dir) -> dict:
    """The run's headline diagnostics, computing and storing them if they are missing (a run that
    finished but was interrupted before or during its diagnosis)."""
    from fourier_toy.runs.files import atomic_write_json

    path = Path(run_dir) / SUMMARY
    summary = json.loads(path.read_text())
    if "diagnostics" not in summary or not (Path(run_dir) / DIAGNOSTICS).is_file():
        summary["diagnostics"] = headline(diagnose_run(run_dir))
        atomic_write_json(path, summary)
    return summary["diagnostics"]
