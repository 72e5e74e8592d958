"""Damaged files that fourier_toy itself writes (run directories, sweep directories) and damaged
input matrices or folders: every reader refuses them with exit 2 and one `error:` line naming the
file, without a traceback, and leaves the damaged directory byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from fourier_toy import cli

TINY = ["--preset", "tiny", "--set", "model.backend=numpy"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("made")
    run = base / "run"
    assert cli.main(["train", *TINY, "--out", str(run)]) == 0
    grid = base / "grid.toml"
    grid.write_text('preset = "tiny"\n[base]\nmodel = { backend = "numpy" }\n'
                    'train = { max_steps = 20 }\n[grid]\nseed = [0]\n')
    sweep = base / "sweep"
    assert cli.main(["sweep", str(grid), "--workers", "1", "--out", str(sweep)]) == 0
    return {"run": run, "sweep": sweep}


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(Path(folder).rglob("*"))}


# ---- damaging ------------------------------------------------------------------------------------

def _header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write_header(path: Path, header, rest: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + rest)


def edit_header(name, fn):
    def damage(d: Path):
        header, rest = _header(d / name)
        _write_header(d / name, fn(header), rest)
    return damage


def edit_tensors(name, fn):
    def damage(d: Path):
        tensors = dict(safetensors.numpy.load_file(str(d / name)))
        header, _ = _header(d / name)
        meta = fn(tensors, header.get("__metadata__"))
        (d / name).write_bytes(safetensors.numpy.save(tensors, metadata=meta))
    return damage


def truncate(name, keep=0.5):
    def damage(d: Path):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[:int(len(data) * keep)])
    return damage


def write(name, text):
    def damage(d: Path):
        (d / name).write_text(text)
    return damage


def edit_json(name, fn):
    def damage(d: Path):
        obj = json.loads((d / name).read_text())
        (d / name).write_text(json.dumps(fn(obj)))
    return damage


def append_line(name, line):
    def damage(d: Path):
        with open(d / name, "a") as f:
            f.write(line + "\n")
    return damage


def resign(d: Path) -> None:
    """Record the damaged weights' sha256 in checkpoint.json, so the readers get to read them."""
    path = d / "checkpoint.json"
    manifest = json.loads(path.read_text())
    for role in ("model", "state"):
        manifest[role]["sha256"] = hashlib.sha256((d / manifest[role]["file"]).read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))


def _set(obj, dotted, value):
    *head, last = dotted.split(".")
    for k in head:
        obj = obj[k]
    if value is _DEL:
        del obj[last]
    else:
        obj[last] = value
    return None


_DEL = object()


def set_field(dotted, value):
    def fn(obj):
        _set(obj, dotted, value)
        return obj
    return fn


def tensor_change(key, fn):
    def change(tensors, meta):
        if fn is None:
            del tensors[key]
        else:
            tensors[key] = fn(tensors[key])
        return meta
    return change


def meta_change(meta_new):
    return lambda tensors, meta: meta_new


M, S, C, K, X = "model.safetensors", "state.safetensors", "config.json", "checkpoint.json", "metrics.jsonl"

SAFETENSORS_DAMAGE = {
    "truncated": lambda f: truncate(f),
    "short": lambda f: truncate(f, keep=0.0001),
    "garbage_header": lambda f: (lambda d: (d / f).write_bytes(struct.pack("<Q", 20) + b"\xff{not json at all!!"
                                                                 + (d / f).read_bytes()[28:])),
    "header_list": lambda f: edit_header(f, lambda h: [1, 2]),
    "header_number": lambda f: edit_header(f, lambda h: 7),
    "entry_string": lambda f: edit_header(f, lambda h: {**h, next(k for k in h if k != "__metadata__"): "x"}),
    "metadata_list": lambda f: edit_header(f, lambda h: {**h, "__metadata__": ["step"]}),
    "metadata_number_value": lambda f: edit_header(f, lambda h: {**h, "__metadata__": {"step": 5}}),
}

WEIGHTS_DAMAGE = {
    "wte_int32": edit_tensors(M, tensor_change("wte.weight", lambda t: t.astype(np.int32))),
    "wte_bool": edit_tensors(M, tensor_change("wte.weight", lambda t: t > 0)),
    "wte_shape": edit_tensors(M, tensor_change("wte.weight", lambda t: t[:-1])),
    "wte_3d": edit_tensors(M, tensor_change("wte.weight", lambda t: t[None])),
    "wte_missing": edit_tensors(M, tensor_change("wte.weight", None)),
    "extra_tensor": edit_tensors(M, lambda t, m: (t.update(extra=np.zeros(2, np.float32)), m)[1]),
    "step_not_int": edit_tensors(M, meta_change({"step": "abc", "format": "pt"})),
    "step_negative": edit_tensors(M, meta_change({"step": "-3", "format": "pt"})),
    "step_missing": edit_tensors(M, meta_change({"format": "pt"})),
}

STATE_DAMAGE = {
    "step_vector": edit_tensors(S, tensor_change("step", lambda t: np.array([1, 2], np.int64))),
    "step_float": edit_tensors(S, tensor_change("step", lambda t: np.array(1.5))),
    "step_missing": edit_tensors(S, tensor_change("step", None)),
    "elapsed_missing": edit_tensors(S, tensor_change("elapsed", None)),
    "elapsed_vector": edit_tensors(S, tensor_change("elapsed", lambda t: np.zeros(3))),
    "opt_m_int": edit_tensors(S, tensor_change("opt.m", lambda t: t.astype(np.int32))),
    "opt_t_vector": edit_tensors(S, tensor_change("opt.t", lambda t: np.zeros(3, np.int64))),
    "opt_m_missing": edit_tensors(S, tensor_change("opt.m", None)),
    "opt_shape": lambda d: edit_tensors(S, tensor_change(
        next(k for k in safetensors.numpy.load_file(str(d / S)) if k.startswith("opt.") and
             safetensors.numpy.load_file(str(d / S))[k].ndim == 1 and
             safetensors.numpy.load_file(str(d / S))[k].size > 1), lambda t: t[:-1]))(d),
}

CHECKPOINT_DAMAGE = {
    "truncated": truncate(K),
    "list": write(K, "[1, 2]"),
    "step_string": edit_json(K, set_field("step", "40")),
    "step_bool": edit_json(K, set_field("step", True)),
    "step_negative": edit_json(K, set_field("step", -1)),
    "model_entry_string": edit_json(K, set_field("model", "model.safetensors")),
    "model_file_path": edit_json(K, set_field("model.file", "../model.safetensors")),
    "config_list": edit_json(K, set_field("config", [])),
    "state_sha_number": edit_json(K, set_field("state.sha256", 5)),
    "step_mismatch": edit_json(K, set_field("step", 20)),
}

CONFIG_DAMAGE = {
    "truncated": truncate(C),
    "list": write(C, "[]"),
    "number": write(C, "3"),
    "task_list": edit_json(C, set_field("task", [1])),
    "d_model_string": edit_json(C, set_field("model.d_model", "32")),
    "d_model_float": edit_json(C, set_field("model.d_model", 32.5)),
    "n_layers_negative": edit_json(C, set_field("model.n_layers", -1)),
    "lr_string": edit_json(C, set_field("train.lr", "fast")),
    "periods_dict": edit_json(C, set_field("embedding.periods", {"a": 1})),
    "split_strings": edit_json(C, set_field("task.split", ["a", "b", "c"])),
    "missing_model": edit_json(C, set_field("model", _DEL)),
    "missing_task": edit_json(C, set_field("task", _DEL)),
    "missing_seed": edit_json(C, set_field("seed", _DEL)),
    "seed_string": edit_json(C, set_field("seed", "0")),
    "unknown_section": edit_json(C, set_field("extra", {})),
    "derived_list": edit_json(C, set_field("derived", [])),
}

METRICS_DAMAGE = {
    "list_line": append_line(X, "[1, 2]"),
    "number_line": append_line(X, "3"),
    "string_line": append_line(X, '"step"'),
    "missing_step": append_line(X, '{"test": {"acc": 0.5}}'),
    "string_step": append_line(X, '{"step": "20"}'),
    "bool_step": append_line(X, '{"step": true}'),
    "split_not_object": append_line(X, '{"step": 10, "test": 5}'),
}


def _cases():
    cases = []
    for name, make in SAFETENSORS_DAMAGE.items():
        for f in (M, S):
            cases.append((f"{f}-{name}", f, make(f), True))
    cases += [(f"{M}-{name}", M, fn, True) for name, fn in WEIGHTS_DAMAGE.items()]
    cases += [(f"{S}-{name}", S, fn, True) for name, fn in STATE_DAMAGE.items()]
    cases += [(f"{K}-{name}", K, fn, False) for name, fn in CHECKPOINT_DAMAGE.items()]
    cases += [(f"{C}-{name}", C, fn, False) for name, fn in CONFIG_DAMAGE.items()]
    cases += [(f"{X}-{name}", X, fn, False) for name, fn in METRICS_DAMAGE.items()]
    return cases


RUN_CASES = _cases()

# Which commands read which file of a run.
READERS = {
    M: ["eval", "resume", "export", "lens", "spectrum", "transplant"],
    S: ["resume"],
    K: ["eval", "resume", "export", "transplant"],
    C: ["eval", "resume", "export", "lens", "transplant"],
    X: ["resume"],
}


def command(reader: str, run: Path, tmp: Path) -> list[str]:
    return {
        "eval": ["eval", run],
        "resume": ["train", "--resume", run],
        "export": ["export", run, tmp / "exported"],
        "lens": ["lens", run],
        "spectrum": ["spectrum", run],
        "transplant": ["train", *TINY, "--set", "embedding.kind=transplant", "--set", f"embedding.source={run}",
                       "--out", tmp / "out"],
    }[reader]


def refused(capsys, argv, damaged: Path, names: str) -> str:
    before = tree(damaged)
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err[-3000:]
    assert "Traceback" not in captured.err
    assert names in lines[0], lines[0]
    assert tree(damaged) == before, "the damaged directory was changed"
    return lines[0]


SKIP = {
    # the transplant reader reads config.json's task.max_operand and wte.weight only
    ("transplant", C): {"d_model_string", "d_model_float", "n_layers_negative", "lr_string", "periods_dict",
                        "split_strings", "missing_model", "missing_seed", "seed_string", "unknown_section",
                        "derived_list"},
    ("transplant", M): {"wte_bool", "extra_tensor", "step_not_int", "step_negative", "step_missing"},
    ("transplant", K): {"step_mismatch"},
}


@pytest.mark.parametrize("case", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_damaged_run(made, tmp_path, capsys, case):
    label, name, damage, sign = case
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    damage(run)
    if sign:
        resign(run)
    for reader in READERS[name]:
        if label.split("-", 1)[1] in SKIP.get((reader, name), ()):
            continue
        if reader == "spectrum" and name == M and "metadata" not in label and "step" in label:
            continue  # spectrum reads the embedding only
        refused(capsys, command(reader, run, tmp_path), run, name)
        assert not (tmp_path / "out").exists() and not (tmp_path / "exported").exists()


def test_eval_prints_nan_loss(made, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    edit_tensors(M, tensor_change("ln_f.weight", lambda t: np.full_like(t, np.nan)))(run)
    resign(run)
    assert cli.main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "loss nan" in out


# ---- sweep directories ---------------------------------------------------------------------------

SW, R, SU = "sweep.json", "results.jsonl", "summary.json"


def in_run(name, fn):
    def damage(d: Path):
        (rid,) = [p.name for p in (d / "runs").iterdir()]
        fn(d / "runs" / rid)
    return damage


SWEEP_CASES = {
    "sweep_truncated": (SW, truncate(SW)),
    "sweep_list": (SW, write(SW, "[]")),
    "sweep_keys_string": (SW, edit_json(SW, set_field("keys", "seed"))),
    "sweep_keys_numbers": (SW, edit_json(SW, set_field("keys", [1]))),
    "sweep_runs_dict": (SW, edit_json(SW, set_field("runs", {"a": 1}))),
    "sweep_runs_missing": (SW, edit_json(SW, set_field("runs", _DEL))),
    "sweep_run_string": (SW, edit_json(SW, lambda o: {**o, "runs": ["x"]})),
    "sweep_id_number": (SW, edit_json(SW, lambda o: {**o, "runs": [{**o["runs"][0], "id": 5}]})),
    "sweep_id_path": (SW, edit_json(SW, lambda o: {**o, "runs": [{**o["runs"][0], "id": "../.."}]})),
    "sweep_values_list": (SW, edit_json(SW, lambda o: {**o, "runs": [{**o["runs"][0], "values": []}]})),
    "sweep_values_missing_key": (SW, edit_json(SW, lambda o: {**o, "keys": ["seed", "model.d_model"]})),
    "sweep_values_missing": (SW, edit_json(SW, lambda o: {**o, "runs": [{"id": o["runs"][0]["id"]}]})),
    "results_list": (R, append_line(R, "[1]")),
    "results_number": (R, append_line(R, "7")),
    "results_id_list": (R, append_line(R, '{"id": [1], "status": "failed", "error": "x"}')),
    "results_status_number": (R, append_line(R, '{"id": "abc", "status": 3}')),
    "results_error_dict": (R, append_line(R, '{"id": "abc", "status": "failed", "error": {"a": 1}}')),
    "summary_final_list": (SU, in_run(SU, edit_json(SU, set_field("final", [1])))),
    "summary_split_number": (SU, in_run(SU, edit_json(SU, set_field("final.test", 3)))),
    "summary_acc_string": (SU, in_run(SU, edit_json(SU, set_field("final.test.acc", "high")))),
    "summary_steps_to_list": (SU, in_run(SU, edit_json(SU, set_field("steps_to", [1])))),
    "summary_steps_to_string": (SU, in_run(SU, edit_json(SU, set_field("steps_to", {"0.9": "x"})))),
    "summary_stop_reason_number": (SU, in_run(SU, edit_json(SU, set_field("stop_reason", 3)))),
    "summary_diverged_string": (SU, in_run(SU, edit_json(SU, lambda o: {**o, "stop_reason": "diverged",
                                                                          "diverged": "x"}))),
    "metrics_list": (X, in_run(X, append_line(X, "[1]"))),
    "metrics_string_step": (X, in_run(X, append_line(X, '{"step": "5", "test": {"acc": 1.0}}'))),
    "metrics_split_number": (X, in_run(X, append_line(X, '{"step": 5, "test": 1}'))),
    "metrics_acc_string": (X, in_run(X, append_line(X, '{"step": 5, "test": {"acc": "x"}}'))),
}


@pytest.mark.parametrize("label", sorted(SWEEP_CASES))
def test_damaged_sweep(made, tmp_path, capsys, label):
    name, damage = SWEEP_CASES[label]
    sweep = tmp_path / "sweep"
    shutil.copytree(made["sweep"], sweep)
    damage(sweep)
    refused(capsys, ["sweep-report", sweep], sweep, name)


# ---- input matrices and folders (transplant sources) ---------------------------------------------

def transplant(tmp_path, source) -> list:
    return ["train", *TINY, "--set", "embedding.kind=transplant", "--set", f"embedding.source={source}",
            "--out", tmp_path / "out"]


def _npy_lying(d: Path) -> Path:
    path = d / "rows.npy"
    np.save(path, np.ones((21, 8), np.float32))
    data = path.read_bytes()
    path.write_bytes(data.replace(b"(21, 8)", b"(99, 8)"))
    return path


def _npz_not_zip(d: Path) -> Path:
    path = d / "rows.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    return path


def _npz_member_text(d: Path) -> Path:
    path = d / "rows.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rows", "hello")
    return path


def _npz_member_broken(d: Path) -> Path:
    path = d / "rows.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rows.npy", b"\x93NUMPY garbage")
    return path


def _npy_object(d: Path) -> Path:
    path = d / "rows.npy"
    np.save(path, np.array([[1, "a"]] * 21, dtype=object))  # np.save pickles object arrays by default
    return path


def _npy_huge(value):
    def make(d: Path) -> Path:
        rows = np.random.default_rng(0).normal(size=(21, 8))
        rows[3] = value
        rows[4] = -value
        path = d / "rows.npy"
        np.save(path, rows)
        return path
    return make


def _hf(index_text):
    def make(d: Path) -> Path:
        folder = d / "hf"
        folder.mkdir()
        (folder / "vocab.json").write_text(json.dumps({str(i): i for i in range(30)}))
        safetensors.numpy.save_file({"wte.weight": np.ones((30, 8), np.float32)}, str(folder / "shard1.safetensors"))
        (folder / "model.safetensors.index.json").write_text(index_text)
        return folder
    return make


INPUT_CASES = {
    "npy_lying_header": (_npy_lying, "rows.npy"),
    "npz_not_zip": (_npz_not_zip, "rows.npz"),
    "npz_member_not_array": (_npz_member_text, "rows.npz"),
    "npz_member_broken": (_npz_member_broken, "rows.npz"),
    "npy_object": (_npy_object, "rows.npy"),
    "npy_1e308": (_npy_huge(1e308), "rows.npy"),
    "npy_1e200": (_npy_huge(1e200), "rows.npy"),
    "hf_index_truncated": (_hf('{"weight_map": {"wte.weight": "sh'), "index.json"),
    "hf_index_list": (_hf("[]"), "index.json"),
    "hf_index_no_map": (_hf('{"metadata": {}}'), "index.json"),
    "hf_index_map_list": (_hf('{"weight_map": ["wte.weight"]}'), "index.json"),
    "hf_index_file_number": (_hf('{"weight_map": {"wte.weight": 3}}'), "index.json"),
    "hf_index_file_path": (_hf('{"weight_map": {"wte.weight": "../shard1.safetensors"}}'), "index.json"),
    "hf_index_file_missing": (_hf('{"weight_map": {"wte.weight": "shard2.safetensors"}}'), "index.json"),
}


@pytest.mark.parametrize("label", sorted(INPUT_CASES))
def test_damaged_input(tmp_path, capsys, label):
    make, names = INPUT_CASES[label]
    src = tmp_path / "src"
    src.mkdir()
    source = make(src)
    refused(capsys, transplant(tmp_path, source), src, names)
    assert not (tmp_path / "out").exists()


def test_deeply_nested_json_in_a_safetensors_header_or_a_tokenizer_is_one_line(tmp_path):
    """JSON nested past Python's recursion limit, in a safetensors header and in a Hugging Face
    tokenizer.json, is refused with the file's name rather than a RecursionError."""
    import struct

    from fourier_toy.embeddings.pretrained import load_hf_folder
    from fourier_toy.errors import FourierToyError
    from fourier_toy.runs.tensors import load_tensors

    deep = ("[" * 100_000 + "]" * 100_000).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(FourierToyError, match="model.safetensors"):
        load_tensors(path)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(path.read_bytes())
    (folder / "tokenizer.json").write_bytes(b'{"model": {"vocab": ' + deep + b"}}")
    with pytest.raises(FourierToyError):
        load_hf_folder(folder, 10)
