"""Training: a model from a config, the loop that trains it into a run directory, and opening a run.

  backends.py     the backend a config names: `make_gpt` (the fast engine or the numpy reference)
                  and AdamW's matching update rule
  build.py        a model at GPT-2's init with the configured number rows; the trainable mask
  batches.py      the batches of an epoch, drawn from [seed, stream, epoch]
  loop.py         `train`: steps, evaluations, checkpoints, resume, the run directory's lock
  evaluate.py     loss, exact / +-2 / +-10 accuracy and error patterns on a split
  open_run.py     `load_run`: a run directory's config, splits and model
  toy_source.py   the built-in pre-trained source: a small model trained on the digits of n
  interchange.py  a run to and from a Hugging Face GPT-2 folder
  api.py          `load_config`: a preset with overrides, as the command line layers them
"""
