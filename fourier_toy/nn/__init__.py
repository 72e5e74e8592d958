"""The numpy reference: GPT-2 you can read, and the oracle every fast kernel is tested against.

  ops.py     op pairs `X_forward(...) -> (out, cache)` / `X_backward(dout, cache) -> grads`
             (embedding, LayerNorm, linear, GELU, attention, cross-entropy)
  params.py  one flat parameter buffer with named views in Hugging Face GPT-2 names (`Layout`)
  model.py   `GPT`: forward/backward with TransformerLens hook names, `run_with_cache`
  optim.py   `AdamW` over the flat buffer (its `UpdateRule` interface), clipping, schedules

Numpy only: this package never imports the fast engine (checked by lint-imports). A GPT runs on
these ops alone unless it is given an engine (`GPT(..., engine=fourier_toy.fast.ENGINE)`).
"""
