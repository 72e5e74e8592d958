"""conftest.shared_data_file: where the tests on real data find it, and what a missing file does
(skip on a workstation, fail under CI=true so that CI never passes by skipping them)."""

import pytest

import conftest
from conftest import SHARED_DATA_ENV, shared_data_dir, shared_data_file

NAME = "rows.npy"


def _outcome(name: str):
    """The exception shared_data_file raises for `name` (pytest's skip or fail), or None."""
    try:
        shared_data_file(name)
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        return e
    return None


def test_default_folder_is_shared_data_beside_the_repository(monkeypatch):
    """Without the variable the folder is <repo>/../shared/data, whatever the working directory."""
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    monkeypatch.chdir("/")
    assert shared_data_dir() == conftest.REPO.parent / "shared" / "data"
    assert (conftest.REPO / "fourier_toy").is_dir() and (conftest.REPO / "tests" / "conftest.py").is_file()


def test_variable_overrides_the_default(monkeypatch, tmp_path):
    """FOURIER_TOY_SHARED_DATA names the folder; an empty value falls back to the default."""
    (tmp_path / NAME).write_bytes(b"x")
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert shared_data_dir() == tmp_path
    assert shared_data_file(NAME) == tmp_path / NAME
    monkeypatch.setenv(SHARED_DATA_ENV, "")
    assert shared_data_dir() == conftest.DEFAULT_SHARED_DATA


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_file_skips_outside_ci(monkeypatch, tmp_path, ci):
    """Outside CI a missing file skips the test, naming the path and the variable."""
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    e = _outcome(NAME)
    assert isinstance(e, pytest.skip.Exception)
    assert str(tmp_path / NAME) in str(e) and SHARED_DATA_ENV in str(e)


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_missing_file_fails_under_ci(monkeypatch, tmp_path, ci):
    """Under CI a missing file fails the test (not a skip), naming the path and the variable."""
    missing = tmp_path / "absent"
    monkeypatch.setenv(SHARED_DATA_ENV, str(missing))
    monkeypatch.setenv("CI", ci)
    e = _outcome(NAME)
    assert isinstance(e, pytest.fail.Exception) and not isinstance(e, pytest.skip.Exception)
    assert str(missing / NAME) in str(e) and SHARED_DATA_ENV in str(e)


def test_a_folder_in_place_of_the_file_is_missing(monkeypatch, tmp_path):
    """A directory with the file's name is not the data: the test is skipped, not handed a folder."""
    (tmp_path / NAME).mkdir()
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    assert isinstance(_outcome(NAME), pytest.skip.Exception)
