"""A sweep process killed outright (SIGKILL) leaves no worker behind, and a rerun completes it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fourier_toy.errors import CheckpointError
from fourier_toy.experiments import sweep
from fourier_toy.experiments.workers import lock_path

sys.path.insert(0, str(Path(__file__).parent))
import test_sweep  # noqa: E402  (the tiny grid and the slow runner)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists() or not hasattr(signal, "SIGKILL"),
                                reason="reads process states from /proc")


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (pool workers and multiprocessing's resource tracker)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_sigkill_of_the_sweep_ends_its_workers_and_a_rerun_completes(tmp_path):
    out = tmp_path / "s"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "import test_sweep\nfrom fourier_toy.experiments import sweep\n"
              f"sweep.run_sweep(test_sweep.tiny_grid(seed=[0, 1, 2]), {str(out)!r}, workers=2,\n"
              "                runner=test_sweep.slow_runner)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    spawned = []
    try:
        deadline = time.monotonic() + 60
        while len(pids := list(out.glob("runs/*/pid"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(pids) == 2, proc.stderr.read().decode() if proc.poll() is not None else "workers did not start"
        workers = [int(p.read_text()) for p in pids]
        spawned = sorted(set(_children(proc.pid)) | set(workers))
        assert set(workers) <= set(spawned)
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(test_sweep._alive(pid) for pid in spawned) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in spawned if test_sweep._alive(pid)], "processes outlived the killed sweep"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in spawned:  # only when the test failed: leave no sleeping process behind
            if test_sweep._alive(pid):
                os.kill(pid, signal.SIGKILL)
    # No orphan started the third run.
    assert len(list(out.glob("runs/*/pid"))) == 2
    result = sweep.run_sweep(test_sweep.tiny_grid(seed=[0, 1, 2]), out, workers=2)
    assert result.ok and result.n_ran == 3
    assert not list(out.glob("runs/*/pid"))  # the interrupted runs were trained again from scratch


def test_a_second_sweep_into_a_locked_out_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "s"
    (out / sweep.RUNS).mkdir(parents=True)
    (out / sweep.SWEEP).write_text("{}")
    holder = lock_path(out, "sweep")
    fd = os.open(holder, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242")
        with pytest.raises(CheckpointError, match="another sweep.*4242"):
            sweep.run_sweep(test_sweep.tiny_grid(seed=[0]), out, workers=0)
    finally:
        os.close(fd)
    # Once its holder is gone (the kernel drops a dead process's lock), the sweep goes ahead.
    assert sweep.run_sweep(test_sweep.tiny_grid(seed=[0]), out, workers=0).ok
