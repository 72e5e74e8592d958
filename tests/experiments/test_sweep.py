"""Sweeps: grid expansion and run ids, restart after interruption, failure isolation, local worker
processes and a Dask LocalCluster giving the same weights, and the aggregate report."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fourier_toy import cli
from fourier_toy import config
from fourier_toy.experiments import grid as grid_mod
from fourier_toy.experiments import records
from fourier_toy.experiments import sweep
from fourier_toy.experiments import sweep_report
from fourier_toy.experiments import workers as workers_mod
from fourier_toy.errors import CheckpointError, ConfigError
from fourier_toy.runs.files import read_jsonl
from fourier_toy.runs.tensors import load_tensors

BASE = {"model": {"backend": "numpy"}, "train": {"max_steps": 20, "eval_every": 10, "checkpoint_every": 10}}


def tiny_grid(**axes):
    axes = axes or {"embedding.kind": ["learned", "fourier"], "seed": [0, 1]}
    return grid_mod.grid_from_dict({"preset": "tiny", "base": BASE, "grid": axes})


def mid_grid():
    """Matrix products large enough for a multi-threaded BLAS to split them (at these sizes 1 and 2
    OpenBLAS threads give different weights within 10 steps), so the executors' thread settings
    show in the weights."""
    base = {"task": {"max_operand": 30}, "model": {"backend": "numpy", "d_model": 64},
            "train": {"batch_size": 256, "max_steps": 10, "eval_every": 10}}
    return grid_mod.grid_from_dict({"preset": "tiny", "base": base,
                                 "grid": {"embedding.kind": ["learned", "fourier"], "seed": [0]}})


def weights(run_dir):
    return load_tensors(run_dir / "model.safetensors")[0]


def assert_same_weights(dir_a, dir_b, ids):
    for rid in ids:
        wa, wb = weights(dir_a / "runs" / rid), weights(dir_b / "runs" / rid)
        assert wa.keys() == wb.keys()
        for name in wa:
            np.testing.assert_array_equal(wa[name], wb[name], err_msg=f"{rid} {name}")


# Module-level runners: worker processes import them by name.

def crash_on_seed_1(cfg, run_dir, threads):
    if cfg["seed"] == 1:
        os._exit(3)  # the worker process dies without a word, as on a segfault or an OOM kill
    return sweep.run_point(cfg, run_dir, threads)


def report_threads(cfg, run_dir, threads):
    import numba
    from threadpoolctl import threadpool_info

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return {"status": "ok", "blas": blas, "numba": numba.get_num_threads(), "given": threads}


def slow_runner(cfg, run_dir, threads):
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "pid.tmp").write_text(str(os.getpid()))
    os.replace(Path(run_dir) / "pid.tmp", Path(run_dir) / "pid")
    time.sleep(120)
    return {"status": "ok"}


@pytest.fixture(scope="module")
def mid_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("mid")
    result = sweep.run_sweep(mid_grid(), out, workers=0)
    assert result.ok
    return out, [r["id"] for r in result.records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 2 x 2 tiny grid trained in this process."""
    out = tmp_path_factory.mktemp("ref")
    result = sweep.run_sweep(tiny_grid(), out, workers=0)
    assert result.ok and result.n_ran == 4
    return out, result


# ---- expansion -----------------------------------------------------------------------------------

def test_expansion_is_the_product_in_file_order_with_content_hash_ids():
    grid = tiny_grid(**{"embedding.kind": ["learned", "fourier"], "model.d_model": [32, 16], "seed": [0, 1, 2]})
    points = grid_mod.expand(grid)
    assert len(points) == 12
    assert [tuple(p.values.values()) for p in points][:4] == [
        ("learned", 32, 0), ("learned", 32, 1), ("learned", 32, 2), ("learned", 16, 0)]
    for p in points:
        assert p.config.embedding.kind == p.values["embedding.kind"]
        assert p.config.model.d_model == p.values["model.d_model"] and p.config.seed == p.values["seed"]
        assert p.config.task.max_operand == 10 and p.config.train.max_steps == 20  # preset + base
        text = json.dumps(p.config.to_dict(), sort_keys=True, separators=(",", ":"))
        assert p.run_id == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert len({p.run_id for p in points}) == 12
    # The id is the config's, not the grid's: reordering keys and values, or restating a preset's or
    # default's value in the base, changes no id.
    shuffled = grid_mod.grid_from_dict({"preset": "tiny", "grid": {"seed": [2, 1, 0], "model.d_model": [16, 32],
                                                                "embedding.kind": ["fourier", "learned"]},
                                     "base": {"train": {"checkpoint_every": 10, "eval_every": 10, "max_steps": 20,
                                                        "lr": 1e-3},
                                              "model": {"backend": "numpy", "n_layers": 1}}})
    again = grid_mod.expand(shuffled)
    assert {p.run_id for p in again} == {p.run_id for p in points}
    assert [p.run_id for p in again] != [p.run_id for p in points]
    by_values = {tuple(sorted(p.values.items())): p.run_id for p in points}
    assert all(by_values[tuple(sorted(p.values.items()))] == p.run_id for p in again)


def test_a_grid_value_may_be_a_named_table_of_keys_set_together():
    conditions = [{"name": "fourier_frozen", "embedding.kind": "fourier", "embedding.freeze": True},
                  {"name": "learned", "embedding.kind": "learned"}]
    points = grid_mod.expand(tiny_grid(condition=conditions, seed=[0, 1]))
    assert [(p.config.embedding.kind, p.config.embedding.freeze, p.config.seed) for p in points] == [
        ("fourier", True, 0), ("fourier", True, 1), ("learned", False, 0), ("learned", False, 1)]
    assert records.format_record({"id": points[0].run_id, "values": points[0].values, "status": "ok"}).count(
        "condition=fourier_frozen") == 1
    with pytest.raises(ConfigError, match=r"\[grid\] condition .*embedding.kinds"):
        grid_mod.expand(tiny_grid(condition=[{"name": "x", "embedding.kinds": "fourier"}]))


def test_expansion_without_grid_is_the_base_alone():
    (point,) = grid_mod.expand(grid_mod.grid_from_dict({"preset": "tiny", "base": BASE}))
    assert point.values == {}
    expected = config.from_dict(BASE, config.from_preset("tiny"))
    assert point.run_id == grid_mod.run_id(expected)


@pytest.mark.parametrize("grid, words", [
    ({"grid": {"model.depth": [1, 2]}}, ["model.depth", "depth"]),
    ({"grid": {"train.lr": [1e-3, "fast"]}}, ["train.lr", "'fast'"]),
    ({"grid": {"model.d_model": [32, 33]}}, ["[grid]", "model.d_model=33", "divisible"]),
    ({"grid": {"seed": []}}, ["seed", "non-empty list"]),
    ({"grid": {"seed": 3}}, ["seed", "non-empty list"]),
    ({"grid": {"seed": [0, 0]}}, ["seed=0", "same config"]),
    ({"grid": {"train.max_seconds": [10.0]}}, ["train.max_seconds", "pure function"]),
    ({"base": {"model": {"d_model": -1}}}, ["[base]", "model.d_model"]),
    ({"preset": "huge"}, ["preset", "tiny"]),
    ({"runs": 3}, ["'runs'", "preset, base, grid"]),
])
def test_bad_grids_name_the_key(grid, words):
    data = {"preset": "tiny", "base": BASE, **grid}
    with pytest.raises(ConfigError) as e:
        grid_mod.expand(grid_mod.grid_from_dict(data))
    for w in words:
        assert w in str(e.value)


def test_grid_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        grid_mod.load_grid(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[grid\nseed = [0]")
    with pytest.raises(ConfigError, match="not valid TOML"):
        grid_mod.load_grid(tmp_path / "bad.toml")
    (tmp_path / "g.toml").write_text('preset = "tiny"\n[base.train]\nmax_steps = 20\n[grid]\n'
                                     '"embedding.kind" = ["learned", "fourier"]\nseed = [0, 1]\n')
    grid = grid_mod.load_grid(tmp_path / "g.toml")
    assert grid.keys == ["embedding.kind", "seed"] and grid.base == {"train": {"max_steps": 20}}


def test_threads_per_worker_never_oversubscribes():
    for cores in (1, 2, 3, 8, 64):
        for workers in (1, 2, 3, 5, 16, 100):
            t = workers_mod.threads_per_worker(workers, cores)
            assert t >= 1 and (workers * t <= cores or t == 1)
            assert workers * (t + 1) > cores  # and leaves no whole core idle


def test_out_dir_that_is_not_a_sweep_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="sweep.json"):
        sweep.run_sweep(tiny_grid(seed=[0]), tmp_path, workers=0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---- restart -------------------------------------------------------------------------------------

def test_restart_redoes_only_unfinished_runs(tmp_path, reference):
    ref_out, ref = reference
    shutil.copytree(ref_out, tmp_path / "s")
    out = tmp_path / "s"
    ids = [r["id"] for r in ref.records]
    no_summary, bad_model, partial, *kept = ids
    (out / "runs" / no_summary / "summary.json").unlink()  # stopped before the end
    (out / "runs" / bad_model / "model.safetensors").write_bytes(b"\x00" * 40)  # torn write
    shutil.rmtree(out / "runs" / partial)
    (out / "runs" / partial).mkdir()  # stopped right after creating its directory
    (out / "runs" / partial / "metrics.jsonl").write_text('{"step": 10')
    stamps = {rid: {f.name: f.stat().st_mtime_ns for f in (out / "runs" / rid).iterdir()} for rid in kept}

    result = sweep.run_sweep(tiny_grid(), out, workers=0)

    assert result.ok and result.n_ran == 3 and result.n_reused == 1
    assert {r["id"] for r in result.records if not r["reused"]} == {no_summary, bad_model, partial}
    for rid in kept:
        assert {f.name: f.stat().st_mtime_ns for f in (out / "runs" / rid).iterdir()} == stamps[rid]
    assert_same_weights(ref_out, out, ids)  # redone runs are the same pure function of the config
    lines = read_jsonl(out / "results.jsonl")
    assert [r["id"] for r in lines] == ids and all(r["status"] == "ok" for r in lines)
    assert sweep.run_sweep(tiny_grid(), out, workers=0).n_ran == 0


def test_finished_run_with_another_config_is_not_deleted(tmp_path, reference):
    ref_out, ref = reference
    shutil.copytree(ref_out, tmp_path / "s")
    rid = ref.records[0]["id"]
    path = tmp_path / "s" / "runs" / rid / "config.json"
    saved = json.loads(path.read_text())
    saved["train"]["lr"] = 0.5
    path.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match=rid):
        sweep.run_sweep(tiny_grid(), tmp_path / "s", workers=0)
    assert path.is_file()


# ---- failures ------------------------------------------------------------------------------------

def test_a_run_that_raises_is_reported_and_the_rest_finish(tmp_path):
    grid = grid_mod.grid_from_dict({"preset": "tiny", "grid": {"embedding.kind": ["transplant", "learned"]},
                                 "base": {**BASE, "embedding": {"source": str(tmp_path / "missing.npy")}}})
    result = sweep.run_sweep(grid, tmp_path / "s", workers=0)
    bad, good = result.records
    assert bad["status"] == "failed" and "missing.npy" in bad["error"]
    assert good["status"] == "ok" and (tmp_path / "s" / "runs" / good["id"] / "summary.json").is_file()
    assert result.failed == [bad] and not result.ok
    assert [r["status"] for r in read_jsonl(tmp_path / "s" / "results.jsonl")] == ["failed", "ok"]
    rep = sweep_report.report(tmp_path / "s")
    assert [f["id"] for f in rep["failed"]] == [bad["id"]] and "missing.npy" in rep["failed"][0]["error"]
    # A raised error leaves no finished run, so a restart tries it again (the file may exist by then).
    again = sweep.run_sweep(grid, tmp_path / "s", workers=0)
    assert again.n_ran == 1 and again.records[1]["reused"]


def test_a_diverged_run_is_failed_and_not_retrained(tmp_path, monkeypatch):
    from fourier_toy.nn import model as model_mod

    real = model_mod.GPT.loss_and_grad

    def nan_for_width_16(self, *args, **kw):
        loss = real(self, *args, **kw)
        return float("nan") if self.cfg.d_model == 16 else loss

    monkeypatch.setattr(model_mod.GPT, "loss_and_grad", nan_for_width_16)
    grid = tiny_grid(**{"model.d_model": [32, 16]})
    result = sweep.run_sweep(grid, tmp_path / "s", workers=0)
    ok, diverged = result.records
    assert ok["status"] == "ok" and diverged["status"] == "failed"
    assert diverged["stop_reason"] == "diverged" and "diverged" in diverged["error"]
    again = sweep.run_sweep(grid, tmp_path / "s", workers=0)
    assert again.n_ran == 0 and again.records[1]["status"] == "failed" and len(again.failed) == 1


def test_a_worker_process_that_dies_fails_only_its_run(tmp_path):
    result = sweep.run_sweep(tiny_grid(seed=[0, 1, 2]), tmp_path / "s", workers=2, runner=crash_on_seed_1)
    by_seed = {r["values"]["seed"]: r for r in result.records}
    assert by_seed[1]["status"] == "failed" and "died" in by_seed[1]["error"]
    assert by_seed[0]["status"] == by_seed[2]["status"] == "ok"
    assert len(result.failed) == 1


# ---- executors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_workers_get_a_share_of_the_cores_and_one_blas_thread(tmp_path, workers):
    result = sweep.run_sweep(tiny_grid(seed=[0, 1]), tmp_path / "s", workers=workers, runner=report_threads)
    expected = workers_mod.threads_per_worker(workers)
    for rec in result.records:
        assert rec["given"] == expected and rec["numba"] == expected
        assert rec["blas"] and all(n == 1 for n in rec["blas"])


def test_in_process_and_one_or_two_workers_give_the_same_weights(tmp_path, mid_reference):
    ref_out, ids = mid_reference
    for workers in (1, 2):
        result = sweep.run_sweep(mid_grid(), tmp_path / f"w{workers}", workers=workers)
        assert result.ok and [r["id"] for r in result.records] == ids
        assert_same_weights(ref_out, tmp_path / f"w{workers}", ids)
        for rid in ids:
            strip = lambda rs: [{k: v for k, v in r.items() if k != "elapsed"} for r in rs]  # noqa: E731
            assert strip(read_jsonl(ref_out / "runs" / rid / "metrics.jsonl")) == \
                strip(read_jsonl(tmp_path / f"w{workers}" / "runs" / rid / "metrics.jsonl"))


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_ctrl_c_stops_the_sweep_and_its_workers_at_once(tmp_path):
    out = tmp_path / "s"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "import test_sweep\nfrom fourier_toy.experiments import sweep\n"
              "try:\n"
              f"    sweep.run_sweep(test_sweep.tiny_grid(seed=[0, 1, 2]), {str(out)!r}, workers=2,\n"
              "                    runner=test_sweep.slow_runner)\n"
              "except KeyboardInterrupt:\n    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers = []
    try:
        deadline = time.monotonic() + 60
        while len(pids := list(out.glob("runs/*/pid"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(pids) == 2, proc.stderr.read().decode() if proc.poll() is not None else "workers did not start"
        workers = [int(p.read_text()) for p in pids]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        time.sleep(0.5)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:  # only when the test failed: do not leave sleeping workers behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert len(list(out.glob("runs/*/pid"))) == 2  # the third run never started


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed", reason="the optional 'distributed' package (fourier_toy[dask]) "
                                              "is not installed")
    import dask
    from distributed import LocalCluster

    # No retries: a task that kills its worker fails at once (the default tries it on 3 more).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as c:
            yield c


def test_dask_local_cluster_equals_the_local_run_bit_for_bit(tmp_path, mid_reference, cluster):
    ref_out, ids = mid_reference
    local = sweep.run_sweep(mid_grid(), tmp_path / "local", workers=2)
    result = sweep.run_sweep(mid_grid(), tmp_path / "d", scheduler=cluster.scheduler_address)
    assert result.ok and [r["id"] for r in result.records] == ids
    assert_same_weights(ref_out, tmp_path / "d", ids)
    assert_same_weights(tmp_path / "local", tmp_path / "d", ids)
    for a, b in zip(local.records, result.records):
        assert a["test_acc"] == b["test_acc"] and a["train_acc"] == b["train_acc"]


def test_dask_worker_that_dies_fails_only_its_run(tmp_path, cluster):
    result = sweep.run_sweep(tiny_grid(seed=[0, 1]), tmp_path / "d", scheduler=cluster.scheduler_address,
                             runner=crash_on_seed_1)
    by_seed = {r["values"]["seed"]: r for r in result.records}
    assert by_seed[0]["status"] == "ok"
    assert by_seed[1]["status"] == "failed" and "KilledWorker" in by_seed[1]["error"]


def test_bad_scheduler_address_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--scheduler"):
        sweep.run_sweep(tiny_grid(seed=[0]), tmp_path / "d", scheduler="localhost:1")
    assert not (tmp_path / "d").exists()


# ---- report --------------------------------------------------------------------------------------

def test_report_aggregates_seeds_per_condition(tmp_path, reference):
    ref_out, ref = reference
    out = tmp_path / "s"
    shutil.copytree(ref_out, out)
    ids = [r["id"] for r in ref.records]
    # Headline numbers of future diagnostics, written where the report looks for them.
    for i, rid in enumerate(ids):
        path = out / "runs" / rid / "summary.json"
        summary = json.loads(path.read_text())
        summary["diagnostics"] = {"fourier": {"high_share": 0.1 * (i + 1)}, "label": "text is skipped"}
        path.write_text(json.dumps(summary))

    rep = sweep_report.write_report(out)

    assert rep["condition_keys"] == ["embedding.kind"] and rep["n_finished"] == 4
    assert [g["condition"] for g in rep["groups"]] == [{"embedding.kind": "learned"}, {"embedding.kind": "fourier"}]
    for g, group_ids in zip(rep["groups"], (ids[:2], ids[2:])):
        assert g["n"] == 2 and sorted(g["runs"]) == sorted(group_ids)
        accs = [json.loads((out / "runs" / rid / "summary.json").read_text())["final"]["test"]["acc"]
                for rid in group_ids]
        stats = g["metrics"]["test_acc"]
        assert stats["mean"] == pytest.approx(np.mean(accs)) and stats["std"] == pytest.approx(np.std(accs, ddof=1))
        assert stats["min"] == min(accs) and stats["max"] == max(accs)
        shares = [0.1 * (ids.index(rid) + 1) for rid in group_ids]
        assert g["metrics"]["diagnostics.fourier.high_share"]["mean"] == pytest.approx(np.mean(shares))
        assert "diagnostics.label" not in g["metrics"]
    assert json.loads((out / "report.json").read_text())["groups"][0]["n"] == 2
    text = (out / "report.txt").read_text()
    assert "learned" in text and "fourier" in text and "diagnostics.fourier.high_share" in text
    assert (out / "figures" / "sweep_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    shutil.rmtree(out / "runs" / ids[3])
    rep = sweep_report.report(out)
    assert rep["groups"][1]["n"] == 1 and [m["id"] for m in rep["missing"]] == [ids[3]]
    assert rep["groups"][1]["metrics"]["test_acc"]["std"] == 0.0


def test_report_needs_a_sweep_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a sweep directory"):
        sweep_report.report(tmp_path)


def test_cli_sweep_commands_exit_status(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('preset = "tiny"\n[base.model]\nbackend = "numpy"\n[base.train]\nmax_steps = 10\n'
                    f'[base.embedding]\nsource = "{tmp_path / "missing.npy"}"\n'
                    '[grid]\n"embedding.kind" = ["learned"]\nseed = [0, 1]\n')
    assert cli.main(["sweep", str(grid), "--workers", "0", "--out", str(tmp_path / "ok")]) == 0
    assert cli.main(["sweep-report", str(tmp_path / "ok")]) == 0
    assert "learned" in capsys.readouterr().out
    grid.write_text(grid.read_text().replace('["learned"]', '["learned", "transplant"]'))
    assert cli.main(["sweep", str(grid), "--workers", "0", "--out", str(tmp_path / "ok")]) == 1
    out = capsys.readouterr().out
    assert "2 ok, 2 failed" in out and "2 already finished" in out
