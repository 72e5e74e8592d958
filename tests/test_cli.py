"""The command line as people meet it: --version, every --help ending in an example that parses,
progress as a bar on a terminal and as one line per finished run or stage elsewhere, and
`reproduce --open`."""

from __future__ import annotations

import io
import json
import re
import shlex
import webbrowser
from importlib import metadata

import pytest

import fourier_toy
from fourier_toy import cli
from fourier_toy.experiments import progress as progress_mod
from fourier_toy.experiments import reproduce as reproduce_mod
from fourier_toy.experiments import grid as grid_mod
from fourier_toy.experiments import sweep
from fourier_toy.experiments.progress import Progress, bars_wanted

COMMANDS = sorted(next(a for a in cli.build_parser()._actions if a.dest == "command").choices)
RUN_LINE = re.compile(r"^\[(\d+)/(\d+)\] (.+): test acc (\d\.\d{3}), (\d+(?:\.\d)?) s$")


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def help_text(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def example_lines(text: str) -> list[str]:
    """The `fourier-toy ...` lines of the example block that ends a help text."""
    lines = text.rstrip("\n").splitlines()
    start = max(i for i, line in enumerate(lines) if re.fullmatch(r"examples?:", line))
    return [line.strip() for line in lines[start + 1:] if line.strip().startswith("fourier-toy ")]


# ---- --version and --help ------------------------------------------------------------------------

def test_version(capsys):
    assert help_text(capsys, ["--version"]) == f"fourier-toy {metadata.version('fourier_toy')}\n"


def test_version_falls_back_to_the_package_attribute(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert cli.version() == fourier_toy.__version__


def test_the_parser_knows_every_command():
    assert set(COMMANDS) == {"train", "eval", "export", "reproduce", "spectrum", "lens", "ablate", "probe",
                             "sweep", "sweep-report", "study", "bench", "pretrain-toy", "plant"}
    assert set(cli.EXAMPLES) == {None, *COMMANDS}


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_ends_with_an_example_that_parses(capsys, command):
    text = help_text(capsys, [command, "--help"] if command else ["--help"])
    assert text.rstrip("\n").splitlines()[-1].strip().startswith("fourier-toy ")
    examples = example_lines(text)
    assert examples
    for line in examples:
        argv = shlex.split(line)[1:]
        args = cli.build_parser().parse_args(argv)  # a bad example raises FourierToyError here
        if command is not None:
            assert args.command == command, line


# ---- the progress rule ---------------------------------------------------------------------------

def test_bars_on_a_terminal_lines_elsewhere_flags_win():
    assert bars_wanted(None, FakeTTY()) is True
    assert bars_wanted(None, io.StringIO()) is False
    assert bars_wanted(True, io.StringIO()) is True
    assert bars_wanted(False, FakeTTY()) is False
    closed = io.StringIO()
    closed.close()
    assert bars_wanted(None, closed) is False


def rec(name, seed, status="ok", **kw):
    return {"id": f"{name}{seed}", "values": {"condition": {"name": name, "embedding.kind": "fourier"}, "seed": seed},
            "status": status, **kw}


def test_off_a_terminal_one_line_per_run_and_per_stage():
    out = io.StringIO()
    show = Progress("reproduce", stream=out)
    assert not show.bars
    show.stage("toy source ready", 3.14)
    show.start(3, reused=2)
    show.result(rec("fourier_frozen", 1, test_acc=0.98912, seconds=14.23, index=1, total=3))
    show.result(rec("pretrained", 0, status="failed", error="FileNotFoundError: rows.npy\n  more\tdetail",
                    index=2, total=3))
    show.result(rec("learned", 2, test_acc=0.5))  # no seconds, no index: measured and counted here
    show.stage("25 runs done in 280 s (1 failed)")
    show.close()
    lines = out.getvalue().splitlines()
    assert lines[:4] == ["reproduce: toy source ready (3.1 s)",
                         "reproduce: 3 runs to train (2 already finished)",
                         "[1/3] fourier_frozen seed 1: test acc 0.989, 14.2 s",
                         "[2/3] pretrained seed 0 failed: FileNotFoundError: rows.npy more detail"]
    m = RUN_LINE.match(lines[4])
    assert m and m.group(1, 2, 3, 4) == ("3", "3", "learned seed 2", "0.500"), lines[4]
    assert lines[5:] == ["reproduce: 25 runs done in 280 s (1 failed)"]


def test_a_sweep_point_is_labelled_by_its_grid_values():
    assert progress_mod.run_label({"embedding.kind": "learned", "model.d_model": 64, "seed": 0}) == \
        "embedding.kind=learned model.d_model=64 seed 0"


def test_on_a_terminal_a_bar_and_no_lines():
    out = FakeTTY()
    with Progress("sweep", stream=out) as show:
        assert show.bars
        show.start(2)
        show.result(rec("learned", 0, test_acc=0.9, seconds=1.0, index=1, total=2))
        show.stage("not shown on a terminal")
    text = out.getvalue()
    assert "sweep" in text and "1/2" in text
    assert not re.search(r"^\[1/2\]", text, re.M) and "not shown" not in text


def test_no_progress_forces_lines_even_on_a_terminal():
    out = FakeTTY()
    show = Progress("sweep", progress=False, stream=out)
    show.start(1)
    show.result(rec("learned", 0, test_acc=0.9, seconds=1.0, index=1, total=1))
    assert out.getvalue().splitlines() == ["sweep: 1 run to train", "[1/1] learned seed 0: test acc 0.900, 1.0 s"]


def test_cli_sweep_off_a_terminal_prints_a_line_per_run(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('preset = "tiny"\n[base.model]\nbackend = "numpy"\n[base.train]\nmax_steps = 10\n'
                    '[grid]\n"embedding.kind" = ["learned", "fourier"]\nseed = [0]\n')
    assert cli.main(["sweep", str(grid), "--workers", "0", "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "sweep: 2 runs to train"
    runs = [RUN_LINE.match(line) for line in err[1:3]]
    assert all(runs), err
    assert [m.group(1, 2, 3) for m in runs] == [("1", "2", "embedding.kind=learned seed 0"),
                                               ("2", "2", "embedding.kind=fourier seed 0")]
    assert re.fullmatch(r"sweep: 2 runs done in \d+(\.\d)? s \(0 failed\)", err[3]), err
    # The seconds are the records' own.
    records = [json.loads(line) for line in (tmp_path / "s" / sweep.RESULTS).read_text().splitlines()]
    assert [float(m.group(5)) for m in runs] == pytest.approx([r["seconds"] for r in records], abs=0.051)


def test_cli_train_off_a_terminal_prints_its_stage(tmp_path, capsys):
    assert cli.main(["train", "--preset", "tiny", "--set", "model.backend=numpy", "--set", "train.max_steps=5",
                     "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"train: run done in \d+(\.\d)? s \(step 5, \w+\)\n", err), err
    assert str(tmp_path / "run") in out


def test_reproduce_off_a_terminal_prints_runs_and_stages(tmp_path, monkeypatch, capsys):
    """reproduce's own lines, with the training and the report replaced by stand-ins."""
    from fourier_toy.training import toy_source

    monkeypatch.setattr(toy_source, "toy_number_rows", lambda n: None)

    def fake_sweep(grid, out, workers=None, runner=None, on_start=None, on_result=None):
        points = grid_mod.expand(grid)
        on_start(len(points), 0)
        records = []
        for i, p in enumerate(points, 1):
            r = {"id": p.run_id, "values": p.values, "status": "ok", "test_acc": 0.125 * i, "seconds": 1.5 * i}
            on_result({**r, "index": i, "total": len(points)})
            records.append(r)
        return sweep.SweepResult(out, records, n_ran=len(points), n_reused=0, seconds=9.0)

    def fake_write(out, extra=None):
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("# report\n")
        return {"dir": str(out), "verdicts": {}}

    monkeypatch.setattr(reproduce_mod.sweep, "run_sweep", fake_sweep)
    monkeypatch.setattr(reproduce_mod.report, "write", fake_write)
    reproduce_mod.reproduce(preset="tiny", seeds=1, out=tmp_path / "r", source="toy", progress=False)
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"reproduce: toy source ready \(\d+\.\d s\)", err[0]), err
    assert err[1:4] == ["reproduce: 5 runs to train", "[1/5] learned seed 0: test acc 0.125, 1.5 s",
                        "[2/5] fourier_frozen seed 0: test acc 0.250, 3.0 s"]
    assert all(RUN_LINE.match(line) for line in err[2:7])
    assert re.fullmatch(r"reproduce: 5 runs done in \d+\.\d s \(0 failed\)", err[7]), err
    assert err[8:] == [f"reproduce: report written: {(tmp_path / 'r' / 'report.md').resolve()}"]


# ---- reproduce: the report's URL and --open --------------------------------------------------------

@pytest.fixture
def fake_reproduce(monkeypatch, tmp_path):
    """`reproduce` replaced by one that writes report.md (and report.html when asked) at once."""
    calls = {}

    def fake(**kwargs):
        out = tmp_path / "r"
        out.mkdir(exist_ok=True)
        (out / "report.md").write_text("# report\n")
        if calls.get("html"):
            (out / "report.html").write_text("<html></html>")
        return {"dir": str(out), "verdicts": {"rescue": "reproduced"}}

    monkeypatch.setattr(reproduce_mod, "reproduce", fake)
    return calls


def test_reproduce_prints_the_report_url_last(capsys, tmp_path, fake_reproduce):
    assert cli.main(["reproduce", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"report: {(tmp_path / 'r' / 'report.md').resolve().as_uri()}"
    assert out[-1].startswith("report: file:///") and "  rescue: reproduced" in out


def test_open_opens_the_html_report_when_there_is_one(capsys, monkeypatch, tmp_path, fake_reproduce):
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **kw: opened.append(url) or True)
    fake_reproduce["html"] = True
    assert cli.main(["reproduce", "--preset", "tiny", "--open"]) == 0
    url = (tmp_path / "r" / "report.html").resolve().as_uri()
    assert opened == [url]
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"report: {url}" and not err


@pytest.mark.parametrize("no_browser", [lambda url, *a, **kw: False,
                                        lambda url, *a, **kw: (_ for _ in ()).throw(webbrowser.Error("none"))])
def test_open_without_a_browser_prints_the_url_and_a_note(capsys, monkeypatch, tmp_path, fake_reproduce, no_browser):
    monkeypatch.setattr(webbrowser, "open", no_browser)
    assert cli.main(["reproduce", "--preset", "tiny", "--open"]) == 0
    out, err = capsys.readouterr()
    url = (tmp_path / "r" / "report.md").resolve().as_uri()
    assert out.splitlines()[-1] == f"report: {url}"
    assert "no browser" in err and url in err
