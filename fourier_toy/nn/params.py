"""One flat parameter buffer with named views, in Hugging Face GPT-2 names and layouts.

Gradients use the same layout, so AdamW is one pass over a buffer and freezing is a mask over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fourier_toy.errors import CheckpointError

@dataclass(frozen=True)
class Layout:
    """name -> (offset, shape) in a flat buffer of `size` entries."""

    entries: tuple  # ((name, offset, shape), ...)
    size: int

    @classmethod
    def gpt2(cls, vocab_size: int, d_model: int, n_layers: int, tied: bool, n_ctx: int) -> "Layout":
        d = d_model
        shapes = [("wte.weight", (vocab_size, d)), ("wpe.weight", (n_ctx, d))]
        for l in range(n_layers):
            h = f"h.{l}."
            shapes += [
                (h + "ln_1.weight", (d,)), (h + "ln_1.bias", (d,)),
                (h + "attn.c_attn.weight", (d, 3 * d)), (h + "attn.c_attn.bias", (3 * d,)),
                (h + "attn.c_proj.weight", (d, d)), (h + "attn.c_proj.bias", (d,)),
                (h + "ln_2.weight", (d,)), (h + "ln_2.bias", (d,)),
                (h + "mlp.c_fc.weight", (d, 4 * d)), (h + "mlp.c_fc.bias", (4 * d,)),
                (h + "mlp.c_proj.weight", (4 * d, d)), (h + "mlp.c_proj.bias", (d,)),
            ]
        shapes += [("ln_f.weight", (d,)), ("ln_f.bias", (d,))]
        if not tied:
            shapes.append(("lm_head.weight", (vocab_size, d)))
        entries, offset = [], 0
        for name, shape in shapes:
            entries.append((name, offset, shape))
            offset += int(np.prod(shape))
        return cls(tuple(entries), offset)

    @property
    def names(self) -> list[str]:
        return [e[0] for e in self.entries]

    def views(self, buf: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into `buf` (size,); writing a view writes the buffer."""
        return {name: buf[o : o + int(np.prod(s))].reshape(s) for name, o, s in self.entries}

    def mask(self, predicate) -> np.ndarray:
        """A bool (size,) mask, True over every tensor whose (name, shape) satisfies predicate."""
        m = np.zeros(self.size, dtype=bool)
        for name, o, s in self.entries:
            if predicate(name, s):
                m[o : o + int(np.prod(s))] = True
        return m


def decay_mask(layout: Layout) -> np.ndarray:
    """Weight decay on matrices only; biases and LayerNorm gains are exempt (nanoGPT's rule)."""
    return layout.mask(lambda name, shape: len(shape) >= 2)


def init_gpt2(layout: Layout, n_layers: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """GPT-2 initialization: N(0, 0.02) matrices, residual projections scaled by 1/sqrt(2 n_layers),
    zero biases, unit LayerNorm gains."""
    buf = np.zeros(layout.size, dtype=dtype)
    views = layout.views(buf)
    for name, _, shape in layout.entries:
        if len(shape) >= 2:
            std = 0.02 / np.sqrt(2 * n_layers) if name.endswith("c_proj.weight") else 0.02
            views[name][...] = rng.normal(0.0, std, size=shape)
        elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            views[name][...] = 1.0
    return buf


def pack(layout: Layout, tensors: dict[str, np.ndarray], dtype=np.float32, where: str = "weights") -> np.ndarray:
    """Named tensors -> a flat buffer; every name must be present with its shape and a float dtype,
    and no other name may be (`where` names the file in CheckpointError)."""
    buf = np.empty(layout.size, dtype=dtype)
    views = layout.views(buf)
    for name, _, shape in layout.entries:
        if name not in tensors:
            raise CheckpointError(f"{where}: tensor {name!r} is missing")
        t = np.asarray(tensors[name])
        if t.shape != tuple(shape):
            raise CheckpointError(f"{where}: tensor {name!r} has shape {t.shape}, expected {tuple(shape)}")
        if t.dtype.kind != "f":
            raise CheckpointError(f"{where}: tensor {name!r} has dtype {t.dtype}, expected a float dtype")
        views[name][...] = t
    extra = set(tensors) - set(layout.names)
    if extra:
        raise CheckpointError(f"{where}: unexpected tensor {sorted(extra)[0]!r} for this model config")
    return buf
