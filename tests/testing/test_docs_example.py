"""docs/testing.md's example test file runs exactly as printed: its one ```python block is written to
a fresh directory and run by pytest in a subprocess, with only the installed plugin to help it."""

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_doc_has_one_python_block_and_it_is_a_test_file():
    (block,) = python_blocks(DOC.read_text())
    assert "from fourier_toy.testing import" in block and "@given(" in block
    assert "known_answer_models(" in block and "assert_" in block


def test_the_example_passes_as_printed(tmp_path):
    (block,) = python_blocks(DOC.read_text())
    (tmp_path / "test_mechanism.py").write_text(block)
    n_tests = len(re.findall(r"^def test_", block, flags=re.M))
    env = {**os.environ, "FOURIER_TOY_CACHE": str(tmp_path / "cache")}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mechanism.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert re.search(rf"\b{n_tests} passed\b", done.stdout) and "skipped" not in done.stdout, tail
