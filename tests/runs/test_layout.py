"""The run directory's file names: fixed (stored runs and the README name them) and recognised."""

from fourier_toy.runs import layout


def test_file_names_are_the_stored_ones():
    assert (layout.CONFIG, layout.METRICS, layout.MODEL, layout.STATE, layout.SUMMARY, layout.DIAGNOSTICS) == (
        "config.json", "metrics.jsonl", "model.safetensors", "state.safetensors", "summary.json",
        "diagnostics.json")


def test_a_run_dir_has_its_config_and_metrics(tmp_path):
    assert not layout.is_run_dir(tmp_path)
    (tmp_path / layout.CONFIG).write_text("{}")
    assert not layout.is_run_dir(tmp_path)  # a Hugging Face folder has a config.json too
    (tmp_path / layout.METRICS).touch()
    assert layout.is_run_dir(tmp_path)
