"""A run exported as a GPT-2 folder and imported back (and, when installed, loaded by transformers).

tests/test_hf_transformers.py covers the tensor-level folder format; these tests cover the
run-level path: run directory -> export_run -> folder -> import_hf / GPT2LMHeadModel.
"""

import json

import numpy as np
import pytest

from fourier_toy import config
from fourier_toy.errors import CheckpointError, ConfigError, DataError
from fourier_toy.training.interchange import export_run, import_hf, task_vocab
from fourier_toy.training.open_run import load_run
from fourier_toy.embeddings.pretrained import load_hf_folder
from fourier_toy.task import Vocab
from fourier_toy.training.loop import train


def tiny(*overrides):
    return config.apply_overrides(config.from_preset("tiny"), ["model.backend=numpy", *overrides])


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def run_dir(request, tmp_path_factory):
    tied = request.param
    out = tmp_path_factory.mktemp("runs") / f"run-{'tied' if tied else 'untied'}"
    # Trained long enough with a high learning rate that biases and LayerNorm gains leave their init,
    # so a dropped or swapped tensor changes the logits.
    train(tiny(f"model.tied={str(tied).lower()}", "train.max_steps=30", "train.lr=0.02", "model.n_layers=2",
               "embedding.kind=fourier"), out, progress=False)
    return out


def all_tokens(p):
    a, b = np.meshgrid(np.arange(p // 2 + 1), np.arange(p // 2 + 1), indexing="ij")
    return Vocab(p).encode(a.ravel(), b.ravel())


def test_round_trip_gives_identical_logits(run_dir, tmp_path):
    run = load_run(run_dir, backend="numpy")
    folder = export_run(run_dir, tmp_path / "hf")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    model, info = import_hf(folder)
    p = run.cfg.task.n_numbers
    assert info["n_numbers"] == p and info["layout_checked_by"] == "vocab.json"
    assert info["model"]["tied"] == run.cfg.model.tied and info["model"]["n_ctx"] == run.cfg.model.n_ctx
    tokens = all_tokens(p)
    ours = run.model.forward(tokens)
    np.testing.assert_array_equal(model.forward(tokens), ours)
    np.testing.assert_array_equal(model.params, run.model.params)
    assert np.abs(run.model.weights["h.1.ln_2.bias"]).max() > 1e-4  # not an untouched init

    hf_cfg = json.loads((folder / "config.json").read_text())
    assert hf_cfg["n_positions"] == run.cfg.model.n_ctx and hf_cfg["vocab_size"] == p + 2
    assert hf_cfg["tie_word_embeddings"] == run.cfg.model.tied
    assert hf_cfg["fourier_toy"]["n_numbers"] == p and hf_cfg["fourier_toy"]["step"] == run.step == 30
    vocab = json.loads((folder / "vocab.json").read_text())
    assert vocab["+"] == p and vocab["="] == p + 1 and vocab["7"] == 7 and len(vocab) == p + 2


def test_exported_folder_is_a_transplant_source(run_dir, tmp_path):
    folder = export_run(run_dir, tmp_path / "hf")
    run = load_run(run_dir)
    rows, info = load_hf_folder(folder, run.cfg.task.n_numbers)
    np.testing.assert_array_equal(rows, run.model.weights["wte.weight"][: run.cfg.task.n_numbers])
    assert info["token_ids"] == list(range(run.cfg.task.n_numbers))


def test_export_refuses_to_overwrite_without_force(run_dir, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="force"):
        export_run(run_dir, out)
    assert (out / "mine.txt").read_text() == "keep"
    with pytest.raises(CheckpointError, match="not a folder this export wrote"):
        export_run(run_dir, out, force=True)  # --force replaces only an earlier export
    assert (out / "mine.txt").read_text() == "keep"
    (out / "mine.txt").unlink()
    export_run(run_dir, out)
    export_run(run_dir, out, force=True)
    assert (out / "vocab.json").is_file()
    with pytest.raises(CheckpointError, match="RUN"):
        export_run(tmp_path / "no-such-run", tmp_path / "x")


def test_import_checks_the_vocabulary_layout(run_dir, tmp_path):
    folder = export_run(run_dir, tmp_path / "hf")
    p = load_run(run_dir).cfg.task.n_numbers
    # A foreign vocabulary: the numbers are not at ids 0..p-1 (GPT-2 has "0" at id 15).
    vocab = task_vocab(p)
    vocab["0"], vocab["1"] = 1, 0
    (folder / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DataError, match=r"vocab\.json: token '0' has id 1, expected 0"):
        import_hf(folder)
    (folder / "vocab.json").unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["fourier_toy"]["n_numbers"] = p + 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"fourier_toy\.n_numbers"):
        import_hf(folder)
    del cfg["fourier_toy"]
    (folder / "config.json").write_text(json.dumps(cfg))
    model, info = import_hf(folder)  # no statement of the layout: vocab_size - 2 numbers, by convention
    assert model.n_numbers == p and info["layout_checked_by"].startswith("assumed")
    with pytest.raises(ConfigError, match="backend"):
        import_hf(folder, backend="torch")
    with pytest.raises(DataError, match="no such folder"):
        import_hf(tmp_path / "absent")


def test_transformers_loads_the_exported_run(run_dir, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (optional extra 'hf')")
    torch.set_num_threads(1)
    run = load_run(run_dir, backend="numpy")
    folder = export_run(run_dir, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    p = run.cfg.task.n_numbers
    tokens = all_tokens(p)
    with torch.no_grad():
        logits = hf(torch.from_numpy(tokens).long()).logits.numpy()
    ours = run.model.forward(tokens)
    np.testing.assert_allclose(logits[:, -1, :p], ours, atol=1e-4, rtol=1e-4)
    assert np.abs(ours).max() > 1e-2
