"""docs/tutorial.ipynb: kept without outputs, written by scripts/make_tutorial.py, using only the
public API of fourier_toy, and running top to bottom in a fresh kernel."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import time
from pathlib import Path

import pytest

import fourier_toy

nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
GENERATOR = ROOT / "scripts" / "make_tutorial.py"
CELL_TIMEOUT = 600  # seconds per cell; the training cell compiles numba's kernels on a fresh install
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb) -> list[tuple[int, str]]:
    return [(i, cell.source) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


def test_notebook_is_committed_without_outputs():
    nb = read_notebook()
    nbformat.validate(nb)
    assert code_cells(nb), "the tutorial has no code cells"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: clear them (python scripts/make_tutorial.py)"
            assert cell.execution_count is None, f"cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_notebook_matches_its_generator():
    spec = importlib.util.spec_from_file_location("make_tutorial", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = [(c.cell_type, c.source) for c in module.build().cells]
    committed = [(c.cell_type, c.source) for c in read_notebook().cells]
    assert built == committed, "docs/tutorial.ipynb differs from scripts/make_tutorial.py: edit the script and run it"


def _public(module, name: str) -> bool:
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return name in exported
    return not name.startswith("_") and hasattr(module, name)


def _private_names(source: str) -> list[str]:
    """Uses of fourier_toy in `source` that are not public: ft.NAME not in fourier_toy.__all__,
    a module path with a private part, or a name not exported by the module it comes from."""
    tree = ast.parse(source)
    aliases: dict[str, object] = {}  # local name -> the fourier_toy module it stands for
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] != "fourier_toy":
                    continue
                if any(part.startswith("_") for part in a.name.split(".")):
                    bad.append(a.name)
                    continue
                importlib.import_module(a.name)
                if a.asname:
                    aliases[a.asname] = importlib.import_module(a.name)
                else:
                    aliases["fourier_toy"] = fourier_toy
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fourier_toy":
            if node.level or any(part.startswith("_") for part in node.module.split(".")):
                bad.append(node.module)
                continue
            parent = importlib.import_module(node.module)
            for a in node.names:
                try:  # a submodule (from fourier_toy.analysis import plots), else a name of the module
                    aliases[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
                    if a.name.startswith("_"):
                        bad.append(f"{node.module}.{a.name}")
                except ModuleNotFoundError:
                    if not _public(parent, a.name):
                        bad.append(f"{node.module}.{a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            if not _public(module, node.attr):
                bad.append(f"{module.__name__}.{node.attr}")
    return bad


def test_code_cells_use_only_public_names():
    cells = code_cells(read_notebook())
    assert any("import fourier_toy as ft" in src for _, src in cells)
    uses = 0
    for i, src in cells:
        bad = _private_names(src)
        assert not bad, f"cell {i} uses names outside the public API: {sorted(set(bad))}\n\n{src}"
        uses += len(re.findall(r"\bft\.\w+", src))
    assert uses >= 10  # the tutorial walks through the API, not around it


def test_public_name_check_catches_private_uses():
    assert _private_names("import fourier_toy as ft\nft.load_config('quick')\n") == []
    assert _private_names("import fourier_toy as ft\nft.no_such_name\n") == ["fourier_toy.no_such_name"]
    assert _private_names("from fourier_toy.analysis import plots\nplots._new()\n") == ["fourier_toy.analysis.plots._new"]
    assert _private_names("from fourier_toy.analysis.fourier import _as_int\n") == ["fourier_toy.analysis.fourier._as_int"]


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    kernelspec = pytest.importorskip("ipykernel.kernelspec", reason="the test extra installs ipykernel")
    # The kernel "python3" is this interpreter: a spec written here comes first on JUPYTER_PATH,
    # ahead of any user-wide python3 kernel that may point at another Python.
    jupyter = tmp_path / "jupyter"
    kernelspec.write_kernel_spec(jupyter / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))  # the notebook's mkdtemp() lands here too

    nb = read_notebook()
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    times = []
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            start = time.perf_counter()
            error = None
            try:
                client.execute_cell(cell, i)
            except Exception as err:  # noqa: BLE001 - any failure is reported with the cell's source
                error = err
            if error is not None:  # failing outside the handler keeps the report free of chained tracebacks
                pytest.fail(f"docs/tutorial.ipynb cell {i} raised {type(error).__name__}: "
                            f"{ANSI.sub('', str(error))}\n\n--- cell {i} ---\n{cell.source}", pytrace=False)
            times.append((i, time.perf_counter() - start))
    print("tutorial cell times:", ", ".join(f"{i}: {t:.1f} s" for i, t in times),
          f"(total {sum(t for _, t in times):.1f} s)")
    images = sum("image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    assert images >= 7, f"expected a figure per section, got {images}"
