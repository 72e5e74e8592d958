"""An exported folder loads in transformers' GPT2LMHeadModel and computes the same logits as ours."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (optional: pip install torch)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (optional extra 'hf')")

from fourier_toy.config import ModelConfig  # noqa: E402
from fourier_toy.training.backends import make_gpt
from fourier_toy.runs.hf import hf_config, read_hf_folder, write_hf_folder  # noqa: E402
from fourier_toy.nn.model import GPT  # noqa: E402

P = 23  # numbers 0..22, '+' = 23, '=' = 24


def _model(tied, seed):
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_ctx=4, tied=tied, backend="numpy")
    model = make_gpt(cfg, P, rng=np.random.default_rng(seed))
    # GPT-2's init leaves biases at 0 and LayerNorm gains at 1; perturb every parameter so a
    # swapped, transposed or dropped tensor changes the logits.
    model.params[:] += np.random.default_rng(seed + 100).normal(0, 0.05, model.params.shape).astype(np.float32)
    return model, cfg


@pytest.mark.parametrize("tied", [True, False])
def test_transformers_gpt2_matches_our_logits(tmp_path, tied):
    torch.set_num_threads(1)
    model, cfg = _model(tied, seed=1 + tied)
    tensors = {name: model.weights[name] for name in model.layout.names}
    hf_cfg = hf_config(P + 2, cfg.n_ctx, cfg.d_model, cfg.n_layers, cfg.n_heads, tied)
    folder = write_hf_folder(tmp_path / "gpt2", tensors, hf_cfg)

    hf = transformers.GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager")
    hf.eval()
    # every weight arrived unchanged (tied: lm_head is wte itself)
    sd = hf.state_dict()
    np.testing.assert_array_equal(sd["transformer.h.1.attn.c_attn.weight"].numpy(), tensors["h.1.attn.c_attn.weight"])
    head = tensors["wte.weight"] if tied else tensors["lm_head.weight"]
    np.testing.assert_array_equal(sd["lm_head.weight"].numpy(), head)

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, P // 2 + 1, size=(2, 6))
    tokens = np.stack([a, np.full(6, P), b, np.full(6, P + 1)], axis=1)  # [a, '+', b, '=']
    with torch.no_grad():
        hf_logits = hf(torch.from_numpy(tokens).long()).logits.numpy()
    ours = model.forward(tokens)
    assert ours.shape == (6, P)
    np.testing.assert_allclose(ours, hf_logits[:, -1, :P], atol=1e-4, rtol=1e-4)
    # every position, and a sequence shorter than n_ctx
    ours_all = model.forward(tokens, all_positions=True)
    np.testing.assert_allclose(ours_all, hf_logits[:, :, :P], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        short = hf(torch.from_numpy(tokens[:, :2]).long()).logits.numpy()
    np.testing.assert_allclose(model.forward(tokens[:, :2]), short[:, -1, :P], atol=1e-4, rtol=1e-4)
    assert np.abs(ours).max() > 1e-2  # the comparison is not between two near-zero arrays


def test_a_transformers_saved_folder_reads_back(tmp_path):
    """save_pretrained's own output (its naming, tying and metadata) is readable by read_hf_folder."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{k: v for k, v in hf_config(P + 2, 4, 16, 2, 2, True).items()
                                         if k not in ("architectures", "model_type", "torch_dtype")})
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(str(tmp_path / "saved"))
    tensors, cfg = read_hf_folder(tmp_path / "saved")
    assert cfg["n_layer"] == 2 and "lm_head.weight" not in tensors
    sd = hf.state_dict()
    for name, value in tensors.items():
        np.testing.assert_array_equal(value, sd["transformer." + name].numpy(), err_msg=name)
