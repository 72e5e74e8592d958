"""Run-directory files: their names, how they are written and read. Knows files, not models.

  layout.py    the file names of a run directory and what each holds
  files.py     atomic writes, JSON objects and JSON lines (metrics.jsonl), RNG state
  tensors.py   safetensors files: atomic writes, whole-file and one-tensor reads, header checks
  read_run.py  a run directory's config and weights, with the checks every reader shares
  hf.py        Hugging Face GPT-2 folders: their file names, tensor names, reading and writing
"""
