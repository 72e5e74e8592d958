"""The `fourier-toy` command line. Bad input prints one line naming the field and exits 2; a run that
failed (a diverged `train`, any failed run of `sweep` or `reproduce`) exits 1, after writing what it can."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
import warnings
from pathlib import Path

from fourier_toy import config as config_mod
from fourier_toy.errors import ConfigError, FourierToyError

EXIT_USAGE = 2
EXIT_FAILED = 1  # valid input, but a run failed or diverged (not bad input: the config is fine)

# The last lines of each command's --help: a command line that works as written (tests/test_cli.py
# parses every one). Runs written by the train example are what the others read.
EXAMPLES = {
    None: ["fourier-toy train --preset quick --seed 1 --out runs/q1",
           "fourier-toy lens runs/q1 --plot lens.png",
           "fourier-toy reproduce --preset quick --open"],
    "train": ["fourier-toy train --preset quick --seed 1 --out runs/q1"],
    "eval": ["fourier-toy eval runs/q1 --split test"],
    "export": ["fourier-toy export runs/q1 hf/q1"],
    "reproduce": ["fourier-toy reproduce --preset quick --seeds 3 --out reproduce-quick --open"],
    "spectrum": ["fourier-toy spectrum runs/q1 --plot spectrum.png"],
    "lens": ["fourier-toy lens runs/q1 --split test --plot lens.png"],
    "ablate": ["fourier-toy ablate runs/q1 --plot table1.png"],
    "probe": ["fourier-toy probe runs/q1 --json"],
    "sweep": ["printf 'preset = \"tiny\"\\n[grid]\\n\"embedding.kind\" = [\"learned\", \"fourier\"]\\nseed = [0, 1]\\n' > grid.toml",
              "fourier-toy sweep grid.toml --workers 2 --out sweeps/grid"],
    "sweep-report": ["fourier-toy sweep-report sweeps/grid"],
    "study": ["fourier-toy study scripts/study/mechanism.toml --workers 2 --out studies/mechanism"],
    "bench": ["fourier-toy bench --configs S --backends numba --rounds 3"],
    "pretrain-toy": ["fourier-toy pretrain-toy --numbers 121 --seed 0"],
    "plant": ["fourier-toy plant --out runs/plant --high attn --low mlp --periods 2,2.5,5,10"],
}


def _help(command: str | None) -> dict:
    """add_parser / ArgumentParser keywords: the example block as the epilog, kept as written."""
    lines = EXAMPLES[command]
    return {"epilog": ("examples:\n" if command is None else "example:\n") + "\n".join(f"  {line}" for line in lines),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def version() -> str:
    """The installed distribution's version; the package's own when run from a source tree."""
    from importlib import metadata

    try:
        return metadata.version("fourier_toy")
    except metadata.PackageNotFoundError:
        from fourier_toy import __version__

        return __version__


class _Version(argparse.Action):
    """--version, looked up only when given: importlib.metadata scans the installed packages, which
    every other command would pay for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"fourier-toy {version()}")
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other bad input
        raise FourierToyError(f"{self.prog}: {message}")


def _config_from_args(args) -> config_mod.Config:
    cfg = config_mod.from_preset(args.preset)
    if args.config:
        cfg = config_mod.load_toml(args.config, cfg)
    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return config_mod.apply_overrides(cfg, overrides)


# Room left in a directory name for the suffixes a command adds next to it (".NAME.replaced-PID").
_NAME_ROOM = 24


def _out_dir(out, field: str = "--out", create: bool = False) -> Path:
    """Make sure the output directory `out` can be created: its parent is created here, and a
    name the file system cannot hold is refused. With `create`, `out` itself is created too. Every
    failure is one ConfigError naming the path and the OS's reason."""
    out = Path(out)
    parent = Path(os.path.abspath(out)).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except FileExistsError as e:  # a file where a directory of the path should be
        raise ConfigError(f"{field}: cannot create {str(out)!r} ({str(e.filename)!r} is a file, "
                          "not a directory)") from None
    except OSError as e:
        raise ConfigError(f"{field}: cannot create {str(out)!r} ({e.strerror or e})") from None
    except (ValueError, AttributeError):
        name_max = 255
    if len(os.fsencode(out.name)) + _NAME_ROOM > name_max:
        raise ConfigError(f"{field}: cannot create {str(out)!r} (name too long: at most "
                          f"{name_max - _NAME_ROOM} bytes)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}: cannot create {str(out)!r} ({os.strerror(errno.EACCES)} in {str(parent)!r})")
    if create:
        try:
            out.mkdir(exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{field}: cannot create {str(out)!r} ({e.strerror or e})") from None
    return out


def cmd_train(args) -> int:
    from fourier_toy.experiments.progress import Progress, seconds_text
    from fourier_toy.training.loop import resume_config, train

    show = Progress("train", args.progress)
    t0 = time.perf_counter()
    if args.resume:
        if args.preset != "quick" or args.config or args.seed is not None:
            raise FourierToyError("--resume: the run's own config is used; only --set of budget keys may be given")
        run = Path(args.resume)
        result = train(resume_config(run, args.set or []), run, resume=True, progress=show.bars)
    else:
        cfg = _config_from_args(args)
        out = Path(args.out) if args.out else Path("runs") / f"{args.preset}-{cfg.embedding.kind}-seed{cfg.seed}"
        _out_dir(out)
        result = train(cfg, out, force=args.force, progress=show.bars)
    show.stage(f"run done in {seconds_text(time.perf_counter() - t0)} s (step {result.step}, {result.stop_reason})")
    print(result.summary_line())
    if result.stop_reason == "diverged":
        print(f"error: {result.divergence_line()}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_eval(args) -> int:
    from fourier_toy.training.evaluate import evaluate
    from fourier_toy.training.open_run import load_run

    run = load_run(args.run)
    result = evaluate(run.model, run.splits[args.split], with_errors=True)
    if args.json:
        print(json.dumps({"run": str(args.run), "split": args.split, **result}, sort_keys=True))
        return 0
    num = {k: "nan" if result[k] is None else f"{result[k]:.4f}" for k in ("loss", "acc", "acc_pm2", "acc_pm10")}
    print(f"{args.run} [{args.split}, n={result['n']}]: loss {num['loss']}  acc {num['acc']}  "
          f"+-2 {num['acc_pm2']}  +-10 {num['acc_pm10']}")
    errs = result["errors"]
    if errs["n_errors"]:
        print(f"errors: {errs['n_errors']}, multiples of 10: {errs['frac_multiple_of_10']:.3f}, "
              f"|error| < 6: {errs['frac_below_6']:.3f}")
        print("histogram of (a+b) - prediction:")
        top = sorted(errs["histogram"].items(), key=lambda kv: -kv[1])[:15]
        for value, count in sorted(top):
            print(f"  {value:+5d}  {count:6d}  {'#' * min(60, count)}")
    return 0


def cmd_export(args) -> int:
    from fourier_toy.training.interchange import export_run

    _out_dir(args.out, "OUT")
    print(export_run(args.run, args.out, force=args.force))
    return 0


def cmd_pretrain_toy(args) -> int:
    from fourier_toy.training.toy_source import ToyConfig, cache_path, toy_number_rows, toy_numbers

    rows, info = toy_number_rows(args.numbers, seed=args.seed, use_cache=not args.no_cache)
    where = "not cached" if args.no_cache else cache_path(ToyConfig(n_numbers=toy_numbers(args.numbers), seed=args.seed))
    print(f"toy source: {rows.shape[0]} numbers x {rows.shape[1]} dims, digit accuracy "
          f"{info['digit_accuracy']['all']:.4f} after {info['steps']} steps; {where}")
    return 0


# PlantSpec field -> the `plant` flag that sets it, so a bad value's message names the flag.
_PLANT_FLAGS = {"max_operand": "--max-operand", "d_model": "--d-model", "n_layers": "--layers", "n_heads": "--heads",
                "high_periods": "--periods", "high_module": "--high", "low_module": "--low",
                "low_frequencies": "--low-frequencies", "magnitude_block": "--magnitude-block", "noise": "--noise",
                "seed": "--seed"}


def cmd_plant(args) -> int:
    """Write a known-answer model (fourier_toy/plant) as a run directory; print its accuracy."""
    from fourier_toy.plant import PlantSpec, write_plant
    from fourier_toy.runs.files import read_json_object
    from fourier_toy.runs.layout import SUMMARY
    from fourier_toy.training.loop import RunResult

    try:
        periods = tuple(float(x) for x in args.periods.split(","))
    except ValueError:
        raise ConfigError(f"--periods: expected comma-separated numbers like 2,2.5,5,10, got {args.periods!r}") from None
    try:
        spec = PlantSpec(max_operand=args.max_operand, d_model=args.d_model, n_layers=args.layers,
                         n_heads=args.heads, high_periods=periods, high_module=args.high, low_module=args.low,
                         low_frequencies=args.low_frequencies, magnitude_block=args.magnitude_block,
                         noise=args.noise, seed=args.seed)
    except ConfigError as e:
        field, _, rest = str(e).partition(":")
        raise ConfigError(f"{_PLANT_FLAGS[field]}:{rest}" if field in _PLANT_FLAGS else str(e)) from None
    _out_dir(args.out)
    path = write_plant(spec, args.out, force=args.force)
    summary = read_json_object(path / SUMMARY)
    print(f"planted {spec.division}: units digit (periods {', '.join(f'{T:g}' for T in spec.high_periods)}) in "
          f"the last {spec.high_module}, magnitude (k = 1..{spec.low_frequencies}) in {spec.low_module}; "
          f"d_model {spec.d_model}, {spec.n_layers} layers, noise {spec.noise:g}")
    print(RunResult(path, 0, summary["stop_reason"], summary["final"]).summary_line())
    return 0


def _diagnostic(args, report_fn, format_fn, plot_fns) -> int:
    """Shared by spectrum / lens / ablate / probe: a table, or JSON, and optionally a figure."""
    from fourier_toy.analysis.plots import check_plot_path

    paths = []
    if args.plot:  # checked before any work: a figure never overwrites a file that is not one of ours
        path = check_plot_path(args.plot)
        paths = [check_plot_path(path if not suffix else path.with_name(f"{path.stem}_{suffix}{path.suffix}"))
                 for _, suffix in plot_fns]
    rep = report_fn()
    if args.json:
        print(json.dumps(rep, sort_keys=True))
    else:
        print(format_fn(rep))
    for (fn, _), path in zip(plot_fns, paths):
        fn(rep, path)
    return 0


def cmd_spectrum(args) -> int:
    from fourier_toy.analysis import diagnose
    from fourier_toy.analysis import plots

    return _diagnostic(args, lambda: diagnose.spectrum_report(args.source, basis=args.basis),
                       diagnose.format_spectrum, [(plots.plot_spectrum, "")])


def cmd_lens(args) -> int:
    from fourier_toy.analysis import diagnose
    from fourier_toy.analysis import plots

    return _diagnostic(args, lambda: diagnose.lens_report(args.run, split=args.split, basis=args.basis),
                       diagnose.format_lens, [(plots.plot_lens, ""), (plots.plot_module_spectra, "modules")])


def cmd_ablate(args) -> int:
    from fourier_toy.analysis import diagnose
    from fourier_toy.analysis import plots
    from fourier_toy.experiments import paper as reference

    ref_rows = [{"modules": {"none": "none", "attn+mlp": "ATTN & MLP", "attn": "ATTN", "mlp": "MLP"}[m],
                 "removed": r, "acc": acc} for (m, r), (_, acc) in reference.TABLE1.items()]
    return _diagnostic(args, lambda: diagnose.ablate_report(args.run, split=args.split, basis=args.basis),
                       diagnose.format_ablate,
                       [(lambda rep, path: plots.plot_ablation(rep, path, reference=ref_rows), ""),
                        (plots.plot_errors, "errors")])


def cmd_probe(args) -> int:
    from fourier_toy.analysis import diagnose
    from fourier_toy.analysis import plots

    return _diagnostic(args, lambda: diagnose.probe_report(args.source, split=args.split),
                       diagnose.format_probe, [(plots.plot_probes, "")])


def cmd_reproduce(args) -> int:
    from fourier_toy.experiments.reproduce import report_url, reproduce

    if args.out:
        _out_dir(args.out, create=True)
    summary = reproduce(preset=args.preset, seeds=args.seeds, out=args.out, source=args.source,
                        workers=args.workers, overrides=args.set or [], progress=args.progress)
    print("verdicts:")
    for claim, verdict in summary["verdicts"].items():
        print(f"  {claim}: {verdict}")
    url = report_url(summary["dir"])
    print(f"report: {url}")  # last, where a terminal makes it one click away
    if args.open:
        _open_in_browser(url)
    failed = summary.get("failed_runs") or []
    if failed:
        print(f"error: {len(failed)} run(s) failed (listed in the report): "
              + "; ".join(f"{f['condition']} seed {f['seed']}: {f['error']}" for f in failed[:3])
              + ("; ..." if len(failed) > 3 else ""), file=sys.stderr)
        return EXIT_FAILED
    return 0


def _open_in_browser(url: str) -> None:
    """Open `url` in the default browser; on a machine without one (a server, CI) say so and go on:
    the report is written and its URL printed either way."""
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except (webbrowser.Error, OSError):
        opened = False
    if not opened:
        print(f"note: --open: no browser available here; open {url} on a machine that has one", file=sys.stderr)


def cmd_study(args) -> int:
    """A regime study (experiments/study.py): the sweep's progress, then study.md; default OUT:
    studies/<GRID file stem>. Exit status 0 when every run succeeded, 1 when any failed."""
    from fourier_toy.experiments.study import STUDY_MD, run_study

    if args.scheduler is not None and args.workers is not None:
        raise ConfigError("--workers: not used with --scheduler (the cluster's workers train the runs)")
    out = Path(args.out) if args.out else Path("studies") / Path(args.grid).stem
    _out_dir(out)
    summary = run_study(args.grid, out, workers=args.workers, scheduler=args.scheduler, progress=args.progress)
    missing = sum(r["missing_runs"] for r in summary["regimes"])
    print(f"{out / STUDY_MD}: {len(summary['regimes'])} regimes" + (f", {missing} runs failed" if missing else ""))
    return 0 if not missing else EXIT_FAILED


def cmd_sweep(args) -> int:
    """Progress lines to stderr, the summary to stdout; default OUT: sweeps/<GRID file stem>.
    Exit status 0 when every run succeeded, 1 when any failed."""
    from fourier_toy.experiments.progress import Progress, seconds_text
    from fourier_toy.experiments.grid import describe_values
    from fourier_toy.experiments.sweep import run_sweep

    if args.scheduler is not None and args.workers is not None:
        raise ConfigError("--workers: not used with --scheduler (the cluster's workers train the runs)")
    out = Path(args.out) if args.out else Path("sweeps") / Path(args.grid).stem
    _out_dir(out)
    show = Progress("sweep", args.progress)
    with show:
        result = run_sweep(args.grid, out, workers=args.workers, scheduler=args.scheduler,
                           on_start=show.start, on_result=show.result)
    show.stage(f"{len(result.records)} runs done in {seconds_text(result.seconds)} s ({len(result.failed)} failed)")
    print(result.summary_line())
    for rec in result.failed:
        print(f"failed {rec['id']} {describe_values(rec['values'])}: {rec.get('error')}")
    print(f"aggregate with: fourier-toy sweep-report {out}")
    return 0 if result.ok else EXIT_FAILED


def cmd_sweep_report(args) -> int:
    from fourier_toy.experiments.sweep import FIGURES
    from fourier_toy.experiments.sweep_report import CURVES, REPORT_JSON, REPORT_TXT, format_report, write_report

    out = Path(args.dir)
    print(format_report(write_report(out)))
    print(f"wrote {out / REPORT_JSON}, {out / REPORT_TXT}, {out / FIGURES / CURVES}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fourier_toy.experiments.conditions import DEFAULT_SEEDS, DEFAULT_SOURCE

    p = _Parser(prog="fourier-toy", description=__doc__, **_help(None))
    p.add_argument("--version", action=_Version, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    progress_help = "progress bar (default: when stderr is a terminal; otherwise a line per finished run)"

    t = sub.add_parser("train", help="train one model into a run directory", **_help("train"))
    t.add_argument("--preset", default="quick", help=f"one of {', '.join(config_mod.PRESETS)} (default quick)")
    t.add_argument("--config", help="a TOML file with [task], [model], [embedding], [train] tables")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one value (repeatable)")
    t.add_argument("--embedding", choices=["learned", "fourier", "transplant"],
                   help="shorthand for --set embedding.kind=...")
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="run directory (default runs/PRESET-EMBEDDING-seedN)")
    t.add_argument("--resume", metavar="RUN", help="continue a run directory bit-identically")
    t.add_argument("--force", action="store_true", help="replace an existing run directory")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=progress_help)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run on one split", **_help("eval"))
    e.add_argument("run")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="write a run as a Hugging Face GPT-2 folder", **_help("export"))
    x.add_argument("run")
    x.add_argument("out")
    x.add_argument("--force", action="store_true", help="replace an existing folder")
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("reproduce", help="the paper's experiments in toy form, with report.md and figures",
                       **_help("reproduce"))
    r.add_argument("--preset", default="quick", help="quick (about 2 minutes: the embedding claims), mechanism (about "
                   "10 minutes: the mechanism claims) or paper (p = 521, hours)")
    r.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"seeds per condition (default {DEFAULT_SEEDS})")
    r.add_argument("--out", help="output directory (default reproduce-PRESET)")
    r.add_argument("--source", default=DEFAULT_SOURCE,
                   help="pre-trained number rows: 'whisper' (real, packaged; the default), 'toy' (pre-trained here), "
                        "a .npy/.npz, a GPT-2 folder or a run")
    r.add_argument("--workers", type=int, help="worker processes (default: the number of cores)")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one value (repeatable)")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=progress_help)
    r.add_argument("--open", action="store_true", help="open the report in the default web browser at the end")
    r.set_defaults(func=cmd_reproduce)

    for name, func, what, help_ in (("spectrum", cmd_spectrum, "source", "Fourier spectrum of number rows (run or .npy)"),
                                    ("lens", cmd_lens, "run", "logit lens and module-logit bands of a run"),
                                    ("ablate", cmd_ablate, "run", "Table 1 analogue: the null-space filters"),
                                    ("probe", cmd_probe, "source", "linear probes for n mod 2, 5, 10")):
        d = sub.add_parser(name, help=help_, **_help(name))
        d.add_argument(what)
        if name != "spectrum":
            d.add_argument("--split", default="test", choices=["train", "val", "test"])
        if name != "probe":
            d.add_argument("--basis", default="exact", choices=["exact", "paper"])
        d.add_argument("--json", action="store_true", help="print JSON instead of a table")
        d.add_argument("--plot", metavar="FILE.png", help="also write the figure")
        d.set_defaults(func=func)

    grid_commands = (
        ("sweep", "run a grid of runs (GRID.toml) on local workers or a Dask cluster", cmd_sweep),
        ("study", "a regime study: claims judged per regime over a sweep (GRID.toml with regime, condition and "
                  "seed axes)", cmd_study),
    )
    for name, help_, func in grid_commands:
        g = sub.add_parser(name, help=help_, **_help(name))
        g.add_argument("grid")
        g.add_argument("--workers", type=int)
        g.add_argument("--scheduler", metavar="tcp://HOST:PORT")
        g.add_argument("--out")
        g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=progress_help)
        g.set_defaults(func=func)
    sr = sub.add_parser("sweep-report", help="aggregate a sweep directory", **_help("sweep-report"))
    sr.add_argument("dir")
    sr.set_defaults(func=cmd_sweep_report)

    from fourier_toy.bench import throughput as bench

    b = sub.add_parser("bench", help="training/evaluation throughput, bench-v1 (S, M, L)", **_help("bench"))
    bench.add_arguments(b)
    b.set_defaults(func=bench.cmd_bench)

    pt = sub.add_parser("pretrain-toy", help="pre-train (or fetch from the cache) the built-in 'toy' source",
                        **_help("pretrain-toy"))
    pt.add_argument("--numbers", type=int, default=121, help="how many numbers the rows must cover")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--no-cache", action="store_true")
    pt.set_defaults(func=cmd_pretrain_toy)

    pl = sub.add_parser("plant", help="write a known-answer model (weights set by hand) as a run directory",
                        **_help("plant"))
    pl.add_argument("--out", required=True, metavar="RUN", help="the run directory to write")
    pl.add_argument("--max-operand", type=int, default=60, help="a, b <= N (a multiple of 5; default 60)")
    pl.add_argument("--d-model", type=int, default=128, help="width (default 128)")
    pl.add_argument("--layers", type=int, default=2, help="layers, at least 2 (default 2)")
    pl.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    pl.add_argument("--high", default="attn", choices=["attn", "mlp"],
                    help="the last-layer module writing the units digit (default attn, as GPT-2)")
    pl.add_argument("--low", default="mlp", choices=["attn", "mlp"],
                    help="the module writing the magnitude (default mlp, as GPT-2)")
    pl.add_argument("--periods", default="2,2.5,5,10", help="the units digit's periods (default 2,2.5,5,10)")
    pl.add_argument("--low-frequencies", type=int, default=None,
                    help="the magnitude's frequencies k = 1..K (default: the most that fit)")
    pl.add_argument("--magnitude-block", type=int, default=5, choices=[1, 3, 5],
                    help="operands' magnitude read at the centre of blocks of this many numbers (default 5)")
    pl.add_argument("--noise", type=float, default=0.0, help="Gaussian weight noise, a fraction of each tensor's RMS")
    pl.add_argument("--seed", type=int, default=0, help="the run's seed: its split and the noise")
    pl.add_argument("--force", action="store_true", help="replace an existing run directory")
    pl.set_defaults(func=cmd_plant)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    # Warnings are held back while the command runs and shown only when it did not fail on bad
    # input: the output of bad input is exactly one line, not numpy's RuntimeWarnings first.
    with warnings.catch_warnings(record=True) as caught:
        try:
            args = parser.parse_args(argv)
            if getattr(args, "embedding", None):
                args.set = [f"embedding.kind={args.embedding}", *(args.set or [])]
            status = args.func(args)
        except FourierToyError as e:
            print("error: " + " ".join(str(e).split()), file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return status


if __name__ == "__main__":
    sys.exit(main())
