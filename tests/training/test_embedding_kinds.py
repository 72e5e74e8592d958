"""The number embedding a config builds (learned | fourier | transplant), freezing, and bad sources."""

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from fourier_toy import cli
from fourier_toy import config
from fourier_toy.embeddings import fourier_rows as embeddings
from fourier_toy.embeddings.packaged import packaged_path
from fourier_toy.training.build import build_model, trainable_mask
from fourier_toy.training.evaluate import evaluate
from fourier_toy.nn.optim import AdamW, clip_grad_norm
from fourier_toy.nn.params import decay_mask
from fourier_toy.runs.files import read_jsonl
from fourier_toy.runs.tensors import load_tensors
from fourier_toy.task import make_splits
from fourier_toy.training.loop import train




def tiny(*overrides):
    return config.apply_overrides(config.from_preset("tiny"), ["model.backend=numpy", *overrides])


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# ---- freezing -------------------------------------------------------------------------------------

@settings(max_examples=16, deadline=None)
@given(kind=st.sampled_from(["learned", "fourier"]), tied=st.booleans(), freeze=st.booleans(),
       seed=st.integers(0, 2**16), lr=st.sampled_from([1e-3, 3e-2]), steps=st.integers(1, 4))
def test_frozen_number_rows_never_change(kind, tied, freeze, seed, lr, steps):
    cfg = tiny(f"embedding.kind={kind}", f"model.tied={str(tied).lower()}",
               f"embedding.freeze={str(freeze).lower()}", f"seed={seed}")
    model, _ = build_model(cfg)
    p = model.n_numbers
    before = {k: v.copy() for k, v in model.weights.items()}
    opt = AdamW(model.layout.size, lr, (0.9, 0.98), 1e-8, 0.1, decay_mask=decay_mask(model.layout),
                trainable_mask=trainable_mask(model, freeze))
    split = make_splits(cfg.task, cfg.seed)["train"]
    rng = np.random.default_rng(seed)
    seen = set()
    for _ in range(steps):
        idx = rng.choice(len(split), size=16, replace=False)
        seen |= set(split.tokens[idx][:, [0, 2]].ravel().tolist())
        model.loss_and_grad(split.tokens[idx], split.targets[idx])
        clip_grad_norm(model.grads, 1.0)
        opt.step(model.params, model.grads)

    wte, wte0 = model.weights["wte.weight"], before["wte.weight"]
    seen = sorted(seen)
    if freeze:
        np.testing.assert_array_equal(bits(wte[:p]), bits(wte0[:p]))
        if tied:  # the unembedding is those same rows
            np.testing.assert_array_equal(bits(model.W_U), bits(wte0[:p]))
    else:
        assert all(not np.array_equal(wte[t], wte0[t]) for t in seen)
    if not tied:  # an untied unembedding trains whether or not the embedding is frozen
        assert not np.array_equal(model.weights["lm_head.weight"][:p], before["lm_head.weight"][:p])
    # '+' and '=' appear in every example and always train, as does the rest of the model
    for t in (p, p + 1):
        assert not np.array_equal(wte[t], wte0[t])
    assert not np.array_equal(model.weights["h.0.mlp.c_fc.weight"], before["h.0.mlp.c_fc.weight"])


@pytest.mark.parametrize("tied", [True, False])
def test_train_keeps_frozen_fourier_rows_in_the_saved_weights(tmp_path, tied):
    cfg = tiny("embedding.kind=fourier", "embedding.freeze=true", f"model.tied={str(tied).lower()}",
               "train.max_steps=20", "train.lr=0.01")
    initial, _ = build_model(cfg)
    train(cfg, tmp_path / "run", progress=False)
    saved, _ = load_tensors(tmp_path / "run" / "model.safetensors")
    p = cfg.task.n_numbers
    np.testing.assert_array_equal(bits(saved["wte.weight"][:p]), bits(initial.weights["wte.weight"][:p]))
    assert not np.array_equal(saved["wte.weight"][p:], initial.weights["wte.weight"][p:])
    assert ("lm_head.weight" in saved) is not tied


# ---- fourier --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mapping", ["orthonormal", "pad"])
@pytest.mark.parametrize("seed", [0, 7])
def test_fourier_rows_come_from_the_config_seed_stream(mapping, seed):
    cfg = tiny("embedding.kind=fourier", f"embedding.mapping={mapping}", "embedding.periods=[10, 5, 2]",
               "embedding.low=lowfreq", f"seed={seed}")
    model, info = build_model(cfg)
    p, d = cfg.task.n_numbers, cfg.model.d_model
    expected = embeddings.fourier_embedding(p, d, np.random.default_rng([seed, config.RNG_EMBED]),
                                            periods=[10.0, 5.0, 2.0], low="lowfreq", mapping=mapping)
    np.testing.assert_array_equal(model.weights["wte.weight"][:p], expected.astype(np.float32))
    assert info == {"kind": "fourier", "periods": [10.0, 5.0, 2.0], "low": "lowfreq", "mapping": mapping}
    # Everything but the number rows is the learned model's init for the same seed.
    learned, _ = build_model(tiny(f"seed={seed}"))
    rest = np.ones(model.layout.size, dtype=bool)
    rest[: p * d] = False  # wte comes first in the buffer
    np.testing.assert_array_equal(model.params[rest], learned.params[rest])
    assert not np.array_equal(model.params[~rest], learned.params[~rest])


# ---- transplant from a file -----------------------------------------------------------------------

def centred_gram(X):
    Xc = X - X.mean(axis=0)
    return Xc @ Xc.T


def test_transplant_narrow_source_keeps_all_geometry(tmp_path):
    rng = np.random.default_rng(3)
    src = rng.normal(size=(25, 16)) + np.arange(25)[:, None] * 0.3  # rows past p = 21 are ignored
    np.save(tmp_path / "rows.npy", src)
    cfg = tiny("embedding.kind=transplant", f"embedding.source={tmp_path / 'rows.npy'}")
    model, info = build_model(cfg)
    rows = model.weights["wte.weight"][:21].astype(np.float64)
    assert np.sqrt(np.mean(rows**2)) == pytest.approx(embeddings.GPT2_INIT_STD, rel=1e-5)
    g_src, g_rows = centred_gram(src[:21]), centred_gram(rows)
    scale = np.sum(g_rows * g_src) / np.sum(g_src * g_src)
    np.testing.assert_allclose(g_rows, scale * g_src, atol=1e-6 * np.abs(g_rows).max())
    assert info["variance_kept"] == 1.0 and info["width_in"] == 16


def test_transplant_wide_source_records_variance_kept_in_the_run(tmp_path):
    rng = np.random.default_rng(4)
    src = rng.normal(size=(61, 48)) * np.linspace(2.0, 0.1, 48)  # decaying variance per column
    path = tmp_path / "wide.npy"
    np.save(path, src.astype(np.float32))
    cfg = tiny("task.max_operand=30", "embedding.kind=transplant", f"embedding.source={path}",
               "embedding.freeze=true", "train.max_steps=2", "train.eval_every=1")
    train(cfg, tmp_path / "run", progress=False)
    emb = json.loads((tmp_path / "run" / "config.json").read_text())["derived"]["embedding"]
    eig = np.sort(np.linalg.eigvalsh(np.cov(src.astype(np.float32).astype(np.float64), rowvar=False)))[::-1]
    assert emb["variance_kept"] == pytest.approx(eig[:32].sum() / eig.sum(), rel=1e-6)
    assert 0.5 < emb["variance_kept"] < 1.0
    assert emb["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert emb["kind"] == "transplant" and emb["method"] == "pca" and emb["width_in"] == 48


# ---- transplant of real pre-trained rows -----------------------------------------------------------

def test_real_pretrained_rows_transplant_and_train(tmp_path):
    cfg = tiny("task.max_operand=30", "embedding.kind=transplant", "embedding.source=whisper",
               "embedding.freeze=true", "train.max_steps=60", "train.eval_every=20", "train.lr=0.003")
    model, _ = build_model(cfg)
    start = evaluate(model, make_splits(cfg.task, cfg.seed)["train"])["loss"]
    result = train(cfg, tmp_path / "run", progress=False)
    losses = [r["train_loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    end = result.final["train"]["loss"]
    print(f"whisper rows, p=61, d=32: train loss {start:.3f} -> {end:.3f}; batch means {np.round(losses, 3)}")
    assert np.isfinite(losses).all() and np.isfinite(end)
    assert end < start - 0.3 and losses[-1] < losses[0]
    emb = json.loads((tmp_path / "run" / "config.json").read_text())["derived"]["embedding"]
    assert emb["sha256"] == hashlib.sha256(packaged_path("whisper").read_bytes()).hexdigest()
    assert emb["name"] == "whisper" and emb["source"] == "packaged"
    assert 0.0 < emb["variance_kept"] < 1.0 and emb["width_in"] == 384


# ---- bad sources through the CLI ---------------------------------------------------------------------

def _hf_folder(path, n_number_tokens):
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps({str(i): i for i in range(n_number_tokens)}))
    save_file({"wte.weight": np.ones((n_number_tokens + 2, 8), np.float32)}, str(path / "model.safetensors"))
    return path


def _npy(path, arr, where, value):
    arr[where] = value
    np.save(path, arr)
    return path


BAD_SOURCES = {
    "missing file": (lambda d: d / "absent.npy", "embedding.source"),
    "1-D": (lambda d: (np.save(d / "flat.npy", np.arange(40.0)), d / "flat.npy")[1], "2-D"),
    "too few rows": (lambda d: (np.save(d / "short.npy", np.ones((10, 8))), d / "short.npy")[1], "10 rows"),
    "nan": (lambda d: _npy(d / "nan.npy", np.arange(240.0).reshape(30, 8), (3, 1), np.nan), "row 3"),
    "inf": (lambda d: _npy(d / "inf.npy", np.arange(240.0).reshape(30, 8), (20, 7), -np.inf), "row 20"),
    "identical rows": (lambda d: (np.save(d / "same.npy", np.ones((30, 8))), d / "same.npy")[1], "identical"),
    "hf vocab lacks 10": (lambda d: _hf_folder(d / "hf", 10), "the number 10"),
    "unknown path": (lambda d: d / "nothing-here", "neither"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_cli_bad_source_is_one_line_exit_2(tmp_path, capsys, case):
    make, fragment = BAD_SOURCES[case]
    src = make(tmp_path)
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "tiny", "--set", "model.backend=numpy", "--embedding", "transplant",
                     "--set", f"embedding.source={src}", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "embedding.source" in err and fragment in err
    assert not out.exists()  # nothing is created for a model that cannot be built


@pytest.mark.parametrize("argv, field", [
    (["--set", "embedding.kind=magic"], "embedding.kind"),
    (["--set", "embedding.kind=transplant"], "embedding.source"),
    (["--embedding", "transplant"], "embedding.source"),
    (["--set", "embedding.kind=transplant", "--set", "embedding.source=toy", "--set", "task.max_operand=600"],
     "embedding.source"),
])
def test_cli_bad_embedding_settings(tmp_path, capsys, argv, field):
    code = cli.main(["train", "--preset", "tiny", "--set", "model.backend=numpy", *argv, "--out",
                     str(tmp_path / "run")])
    _, err = capsys.readouterr()
    assert code == 2 and field in err and err.count("\n") == 1 and "Traceback" not in err
