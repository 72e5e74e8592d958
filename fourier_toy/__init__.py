"""fourier_toy: small numpy GPT-2 models that add numbers with Fourier features.

Models are trained on single-token addition a + b and examined with the spectral diagnostics of
Zhou et al. 2024, "Pre-trained Large Language Models Use Fourier Features to Compute Addition".

Layout, from the base up (a module imports only what is listed before it):
    config, errors, task   hyperparameters and presets; the exception family; tokens and splits
    nn/                    the numpy reference: ops, parameter layout, GPT with hooks, AdamW
    runs/                  run-directory files: safetensors, JSON lines, Hugging Face folders
    fast/                  the numba engine (fast.ENGINE) that a numba-backed GPT runs on
    embeddings/            Fourier-initialized and transplanted (pre-trained) number rows
    training/              models from configs, the training loop, evaluation, opening runs
    analysis/              Fourier spectra, logit lens, null-space filters, probes, reports, plots
    experiments/           the paper's conditions, reproduce, its report, sweeps
    bench/                 training and evaluation throughput
    cli                    the `fourier-toy` command

The names in `__all__` are the public API, meant for notebooks; README.md's "Python API" section
walks through them:

    import fourier_toy as ft
    cfg = ft.load_config("quick", {"train.max_steps": 300})
    ft.train(cfg, "runs/mine")
    run = ft.load_run("runs/mine")
    logits, cache = run.model.run_with_cache(run.splits["test"].tokens, names=["blocks.0.hook_resid_post"])

A name imports its module when first used (PEP 562), so `import fourier_toy`, which every
submodule import and the command line go through, loads neither numpy nor numba.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute", relative to this package
_API = {
    # configs
    "Config": "config:Config",
    "PRESETS": "config:PRESETS",
    "load_config": "training.api:load_config",
    # errors
    "FourierToyError": "errors:FourierToyError",
    "ConfigError": "errors:ConfigError",
    "DataError": "errors:DataError",
    "CheckpointError": "errors:CheckpointError",
    # the task
    "Vocab": "task:Vocab",
    "Split": "task:Split",
    "make_splits": "task:make_splits",
    # models and runs
    "GPT": "nn.model:GPT",
    "hook_names": "nn.model:hook_names",
    "build_model": "training.build:build_model",
    "fourier_embedding": "embeddings.fourier_rows:fourier_embedding",
    "train": "training.loop:train",
    "RunResult": "training.loop:RunResult",
    "load_run": "training.open_run:load_run",
    "Run": "training.open_run:Run",
    "evaluate": "training.evaluate:evaluate",
    "predict": "training.evaluate:predict",
    "score": "training.evaluate:score",
    "export_run": "training.interchange:export_run",
    "import_hf": "training.interchange:import_hf",
    # spectra
    "number_axis": "analysis.fourier:number_axis",
    "spectrum": "analysis.fourier:spectrum",
    "frequency_magnitudes": "analysis.fourier:frequency_magnitudes",
    "mean_dft_amplitude": "analysis.fourier:mean_dft_amplitude",
    "band_energy_fractions": "analysis.fourier:band_energy_fractions",
    "find_outliers": "analysis.outliers:find_outliers",
    # logit lens and module logits
    "residual_last": "analysis.lens:residual_last",
    "logit_lens": "analysis.lens:logit_lens",
    "module_logits": "analysis.lens:module_logits",
    "module_spectra": "analysis.lens:module_spectra",
    # null-space filters
    "filter_hooks": "analysis.filters:filter_hooks",
    "ablation_table": "analysis.filters:ablation_table",
    "single_pass": "analysis.filters:single_pass",
    # probes
    "probe_mod": "analysis.probes:probe_mod",
    # per-run reports (the `fourier-toy spectrum / lens / ablate / probe` commands) and their tables
    "spectrum_report": "analysis.diagnose:spectrum_report",
    "lens_report": "analysis.diagnose:lens_report",
    "ablate_report": "analysis.diagnose:ablate_report",
    "probe_report": "analysis.diagnose:probe_report",
    "format_spectrum": "analysis.diagnose:format_spectrum",
    "format_lens": "analysis.diagnose:format_lens",
    "format_ablate": "analysis.diagnose:format_ablate",
    "format_probe": "analysis.diagnose:format_probe",
    # experiments
    "reproduce": "experiments.reproduce:reproduce",
}

__all__ = list(_API)


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
