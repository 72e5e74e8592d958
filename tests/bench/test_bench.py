"""Smoke test of the throughput benchmark at tiny sizes: JSON lines, fields, FLOP count (no timings)."""

import json
import sys

import numpy as np
import pytest

import fourier_toy
from fourier_toy.bench import throughput as bench
from fourier_toy.errors import ConfigError

TINY = {"T": (8, 2, 2, 16)}  # d_model, n_layers, n_heads, batch
FIELDS = {"bench", "config", "backend", "d_model", "n_layers", "n_heads", "batch", "threads",
          "train_examples_per_s", "train_step_ms", "eval_examples_per_s", "train_gflops", "eval_gflops",
          "peak_gflops", "frac_peak", "blas", "machine", "gflop_per_example_train"}


def _run(**kw):
    lines = []
    records = bench.run(configs=["T"], sizes=TINY, steps=2, rounds=2, warmup=1, threads=1, eval_batch=8,
                        emit=lines.append, peak_size=64, settle=0, min_seconds=0, warm=0, **kw)
    parsed = [json.loads(line) for line in lines]
    assert parsed == records
    return parsed


def test_one_json_line_per_backend_with_every_field():
    records = _run(backends=["numba", "numpy"])
    assert [r["backend"] for r in records] == ["numba", "numpy"]
    for r in records:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["bench"] == "bench-v1" and r["config"] == "T" and r["threads"] == 1
        assert r["train_examples_per_s"] > 0 and r["eval_examples_per_s"] > 0
        assert len(r["train_examples_per_s_rounds"]) == 2
        # min_seconds=0: the 2 --steps asked for, rounded up to whole calls of train_steps
        assert r["steps_per_round"] == r["steps_per_call"] == bench.STEPS_PER_CALL
        # The derived figures follow from the measured ones.
        assert r["train_step_ms"] == pytest.approx(1e3 * r["batch"] / r["train_examples_per_s"], rel=1e-3)
        assert r["train_gflops"] == pytest.approx(r["train_examples_per_s"] * r["gflop_per_example_train"], rel=1e-2)
        assert r["frac_peak"] == pytest.approx(r["train_gflops"] / r["peak_gflops"], rel=2e-2)


def test_vs_torch_adds_torch_and_ratio_lines():
    pytest.importorskip("torch")
    records = _run(backends=["numba"], vs_torch=True)
    assert [r.get("backend", r.get("ratio")) for r in records] == ["numba", "torch", "ours/torch"]
    torch_rec, ratio = records[1], records[2]
    assert torch_rec["torch_threads"] == 1
    assert ratio["numba"]["train"] == pytest.approx(
        records[0]["train_examples_per_s"] / torch_rec["train_examples_per_s"], rel=1e-2)


def test_vs_torch_without_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.delitem(sys.modules, "fourier_toy.bench.torch_twin", raising=False)
    monkeypatch.delattr(fourier_toy, "torch_model", raising=False)
    with pytest.raises(ConfigError, match="PyTorch is not installed"):
        bench.run(configs=["T"], sizes=TINY, vs_torch=True, emit=lambda line: None)


def test_bad_arguments_name_the_option():
    with pytest.raises(ConfigError, match="--configs"):
        bench.run(configs=["XL"], emit=lambda line: None)
    with pytest.raises(ConfigError, match="--backends"):
        bench.run(configs=["S"], backends=["jax"], emit=lambda line: None)
    with pytest.raises(ConfigError, match="--steps"):
        bench.run(configs=["S"], steps=0, emit=lambda line: None)
    with pytest.raises(ConfigError, match="--settle"):
        bench.run(configs=["S"], settle=-1, emit=lambda line: None)
    with pytest.raises(ConfigError, match="--min-seconds"):
        bench.run(configs=["S"], min_seconds="1", emit=lambda line: None)
    with pytest.raises(ConfigError, match="--warm-seconds"):
        bench.run(configs=["S"], warm=61, emit=lambda line: None)
    assert bench.main(["--configs", "XL"]) == 2


def _matmuls(d, n_layers, T, p):
    """(m, n, k) of every product one example's last-position forward needs, written out."""
    shapes = []
    for l in range(n_layers):
        Tq = 1 if l == n_layers - 1 else T  # the last block: queries and the rest at the last position
        shapes += [(T, 2 * d, d), (Tq, d, d)]  # keys and values; queries
        shapes += [(Tq, T, d), (Tq, d, T)]     # scores q k^T and pattern @ v (all heads together)
        shapes += [(Tq, d, d), (Tq, 4 * d, d), (Tq, d, 4 * d)]  # attention output, MLP in and out
    return shapes + [(1, p, d)]  # unembedding


@pytest.mark.parametrize("d,n_layers", [(64, 2), (128, 2), (256, 4), (8, 1)])
def test_flop_count_matches_the_products_written_out(d, n_layers):
    want = sum(2 * m * n * k for m, n, k in _matmuls(d, n_layers, 4, bench.P))
    assert bench.forward_flops(d, n_layers) == want


def test_flop_count_matches_pytorch_flop_counter():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from fourier_toy.config import ModelConfig
    from fourier_toy.nn.model import GPT
    from fourier_toy.bench.torch_twin import TorchGPT

    gpt = GPT(ModelConfig(d_model=16, n_layers=3, n_heads=2, backend="numpy"), bench.P, rng=np.random.default_rng(0))
    tm = TorchGPT(gpt, last_only=True)
    tokens = torch.zeros((5, 4), dtype=torch.int64)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        tm(tokens)
    # Its counter sees the projections and the unembedding, not the CPU attention kernel.
    attention = sum(2 * m * n * k for m, n, k in _matmuls(16, 3, 4, bench.P) if 4 in (n, k))
    assert counter.get_total_flops() == 5 * (bench.forward_flops(16, 3) - attention)


def test_torch_model_computes_the_same_function():
    torch = pytest.importorskip("torch")
    from fourier_toy.config import ModelConfig
    from fourier_toy.nn.model import GPT
    from fourier_toy.bench.torch_twin import TorchGPT

    for tied in (False, True):
        gpt = GPT(ModelConfig(d_model=12, n_layers=2, n_heads=3, tied=tied, backend="numpy"), 9,
                  rng=np.random.default_rng(1), dtype=np.float64)
        gpt.params[:] = np.random.default_rng(2).normal(0, 0.3, gpt.params.shape)
        tokens = np.random.default_rng(3).integers(0, gpt.vocab_size, (6, 4))
        for last_only in (False, True):
            tm = TorchGPT(gpt, last_only=last_only)
            got = tm(torch.from_numpy(tokens)).detach().numpy()
            np.testing.assert_allclose(got, gpt.forward(tokens), rtol=1e-5, atol=1e-5)
        assert set(tm.named_tensors()) == set(gpt.weights)


def test_min_seconds_lengthens_short_stretches():
    lines = []
    rec, = bench.run(configs=["T"], sizes=TINY, backends=["numba"], steps=2, rounds=1, warmup=1, threads=1,
                     eval_batch=8, emit=lines.append, peak_size=64, settle=0, min_seconds=0.2, warm=0)
    # A tiny step takes well under 10 ms, so 0.2 s needs more than the one call of STEPS_PER_CALL
    # steps that 2 steps take (test_one_json_line_per_backend_with_every_field).
    assert rec["steps_per_round"] > bench.STEPS_PER_CALL and rec["steps_per_round"] % bench.STEPS_PER_CALL == 0


def test_keep_busy_runs_until_the_time_is_up():
    import time

    calls = []
    bench._keep_busy(lambda: calls.append(1), 0)
    assert calls == []
    t0 = time.perf_counter()
    bench._keep_busy(lambda: (calls.append(1), time.sleep(0.01)), 0.05)
    assert time.perf_counter() - t0 >= 0.05 and 3 <= len(calls) <= 6


# ---- the figure --------------------------------------------------------------------------------------

def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")  # width, height


def test_plot_draws_a_column_per_configuration_from_records_or_their_file(tmp_path):
    from fourier_toy.analysis.plots import plot_bench

    lines = []
    records = bench.run(configs=["T", "U"], sizes={**TINY, "U": (8, 1, 2, 8)}, backends=["numba", "numpy"], steps=2,
                        rounds=2, warmup=1, threads=1, eval_batch=8, emit=lines.append, peak_size=64, settle=0,
                        min_seconds=0, warm=0)
    (tmp_path / "bench.jsonl").write_text("\n".join(lines) + "\n")
    two = plot_bench(records, tmp_path / "two.png")
    one = plot_bench([r for r in records if r["config"] == "T"], tmp_path / "one.png")
    (w2, h2), (w1, h1) = _png_size(two), _png_size(one)
    assert h2 == h1 and w2 == 2 * w1  # one column per configuration, two rows (training, evaluation)
    again = plot_bench(tmp_path / "bench.jsonl", tmp_path / "again.png")
    assert again.read_bytes() == two.read_bytes()


def test_plot_needs_backend_records_with_their_fields(tmp_path):
    from fourier_toy.errors import DataError
    from fourier_toy.analysis.plots import plot_bench

    with pytest.raises(DataError, match="backend"):
        plot_bench([{"bench": "bench-v1", "config": "S", "ratio": "ours/torch"}], tmp_path / "x.png")
    record = {"config": "S", "backend": "numba", "d_model": 64, "n_layers": 2, "batch": 256,
              "train_examples_per_s": 5e4, "eval_examples_per_s": 2e5}
    plot_bench([record], tmp_path / "x.png")  # the rounds are optional
    del record["eval_examples_per_s"]
    with pytest.raises(DataError, match="'S' / 'numba' lacks \\['eval_examples_per_s'\\]"):
        plot_bench([record], tmp_path / "y.png")
    assert not (tmp_path / "y.png").exists()


def test_plot_option_is_checked_before_the_run_and_written_after_it(tmp_path, monkeypatch, capsys):
    import time

    t0 = time.perf_counter()
    for bad in ("bench.txt", str(tmp_path / "missing" / "b.png"), str(tmp_path)):
        assert bench.main(["--configs", "S", "--plot", bad]) == 2
        assert "--plot" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 5  # refused at once, without measuring S
    monkeypatch.setitem(bench.CONFIGS, "T", TINY["T"])
    out = tmp_path / "b.png"
    assert bench.main(["--configs", "T", "--backends", "numba", "--steps", "1", "--rounds", "1", "--warmup", "0",
                       "--threads", "1", "--eval-batch", "8", "--settle", "0", "--min-seconds", "0",
                       "--warm-seconds", "0", "--plot", str(out)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[0])["config"] == "T"  # stdout: only the JSON lines
    assert str(out) in captured.err and _png_size(out)[0] > 0
