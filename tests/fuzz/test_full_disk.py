"""Category 6, a full disk: `train` and `export` write to a 2 MB tmpfs that has from 0 to 40 kB
left. Each must exit 2 with one `error:` line, and once space is freed the same command (or, for
a run that kept a checkpoint, `train --resume`) must succeed: nothing half-written blocks a later
run. Needs root and a machine that allows mounting a tmpfs; skipped otherwise."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import TINY, describe, lost_files, record, run_main, snapshot


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", disk], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed on this machine")
    try:
        yield disk
    finally:
        # A process of the test may still hold a file there for a moment: detach lazily then, so
        # the mount never outlives the test (pytest could not remove its temporary folder).
        if subprocess.run(["umount", disk], capture_output=True).returncode:
            subprocess.run(["umount", "-l", disk], capture_output=True)


def fill(disk, leave: int):
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    try:  # top up whatever rounding left
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
            with open(disk / "filler", "ab") as f:
                f.write(b"\0" * 4096)
    except OSError:
        pass


@pytest.mark.parametrize("leave_kb", [0, 8, 40])
@pytest.mark.parametrize("command", ["train", "export"])
def test_full_disk(command, leave_kb, small_disk, fuzz_inputs):
    run = fuzz_inputs["run"]
    out = small_disk / "out"
    argv = ["train", *TINY, "--out", out] if command == "train" else ["export", run, out]
    fill(small_disk, leave_kb * 1024)
    before = snapshot(run)
    res = run_main(argv)
    found = record("full_disk", res, lost_files(before))
    assert not found, describe(res, found)
    (small_disk / "filler").unlink()
    again = run_main(argv)
    if again.code != 0 and command == "train":
        first = again.stderr.strip()[-200:]
        again = run_main(["train", "--resume", out])
        assert again.code == 0, f"after freeing space, rerun: {first}; resume: {again.stderr.strip()[-200:]}"
    assert again.code == 0, f"after freeing space: {describe(again, [again.stderr.strip()[-300:]])}"
