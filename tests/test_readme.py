"""README.md's Python blocks run as written, and the public API of fourier_toy/__init__.py resolves
lazily: importing the package loads neither numpy nor numba, and the command line's help no numba."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest

import fourier_toy

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# A fence "```python" opens a block; "```python no-run" marks one that is shown but not executed.
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NO_RUN = "no-run"


def python_blocks() -> list[tuple[list[str], str]]:
    """(info words after "python", source) of every ```python block, in order."""
    return [(info.split(), body) for info, body in FENCE.findall(README.read_text(encoding="utf-8"))]


class _CallChecker:
    """Stands in for the package in a no-run block: each call of a public function is bound to the
    real function's signature, so a wrong argument fails here, but nothing runs."""

    def __getattr__(self, name):
        real = getattr(fourier_toy, name)
        if not callable(real):
            return real

        def check(*args, **kwargs):
            inspect.signature(real).bind(*args, **kwargs)
            return mock.MagicMock(name=f"{name}(...)")

        return check


def _fail(i: int, info: list[str], body: str, err: BaseException):
    pytest.fail(f"README.md python block {i} ({' '.join(['python', *info])}) raised "
                f"{type(err).__name__}: {err}\n\n{body}", pytrace=False)


def test_readme_has_python_blocks():
    blocks = python_blocks()
    assert any(NO_RUN not in info for info, _ in blocks)
    assert any(NO_RUN in info for info, _ in blocks)


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    from threadpoolctl import threadpool_limits

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the blocks' mkdtemp() lands here too
    ns: dict = {"__name__": "__readme__"}
    # One BLAS thread, as sweeps run: on a busy machine OpenBLAS's waiting threads make the
    # numpy backend's small matmuls several times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        for i, (info, body) in enumerate(python_blocks()):
            error = None
            try:
                code = compile(body, f"README.md python block {i}", "exec")
                if NO_RUN in info:
                    exec(code, {k: (_CallChecker() if v is fourier_toy else v) for k, v in ns.items()})
                else:
                    exec(code, ns)
            except Exception as err:  # noqa: BLE001 - any failure is reported with the block's text
                error = err
            if error is not None:  # failing outside the handler keeps the report free of chained tracebacks
                _fail(i, info, body, error)


def test_every_public_name_resolves():
    names = fourier_toy.__all__
    assert len(names) == len(set(names))
    listed = dir(fourier_toy)
    for name in names:
        assert getattr(fourier_toy, name) is not None, name
        assert name in listed, name
    with pytest.raises(AttributeError):
        fourier_toy.no_such_name  # noqa: B018
    assert not hasattr(fourier_toy, "no_such_name")


def test_import_loads_neither_numpy_nor_numba():
    code = (
        "import sys\n"
        "loaded = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'numba'})\n"
        "import fourier_toy, fourier_toy.errors\n"
        "dir(fourier_toy)\n"
        "fourier_toy.load_config('quick', {'model.d_model': 64})\n"
        "print(loaded())\n"
        "from fourier_toy.cli import build_parser\n"
        "build_parser().format_help()  # what `fourier-toy --help` prints\n"
        "print('numba' in loaded())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split("\n")[:2] == ["[]", "False"], done.stdout
