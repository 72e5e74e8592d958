"""The same GPT-2 in PyTorch eager: the baseline of the throughput benchmark (bench.py).

Built from a fourier_toy GPT's named tensors, so both start from the same weights and compute the
same function: token + position embedding, pre-LayerNorm blocks (eps 1e-5) with causal attention
(`scaled_dot_product_attention`, 1/sqrt(d_head) scaling) and a tanh-GELU MLP, a final LayerNorm
and the number logits at the last position. Linear layers use the GPT-2 Conv1D layout
(`addmm(b, x, W)` with W (d_in, d_out)), as Hugging Face's GPT-2 does.

As PyTorch models are usually written (nanoGPT, Hugging Face), every block runs over every
position and only the final LayerNorm and unembedding are restricted to the last position.
`last_only=True` gives the last block the same shortcut as model.py (queries, attention output
and MLP at the last position only), for a like-for-like comparison of the FLOPs.

PyTorch is an optional dependency (`pip install 'fourier_toy[torch]'`); importing this module
without it raises ConfigError with that hint.
"""

from __future__ import annotations

import numpy as np

from fourier_toy.config import LN_EPS
from fourier_toy.errors import ConfigError

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the environment
    raise ConfigError("--vs-torch: PyTorch is not installed; install it with "
                      "pip install 'fourier_toy[torch]' (the CPU build is enough)") from None



class TorchGPT(torch.nn.Module):
    """A fourier_toy `GPT` (any backend) copied into PyTorch float32 parameters.

    Parameters keep the GPT-2 names with '.' replaced by '__' (torch forbids dots in names);
    `named_tensors()` gives them back under the original names.
    """

    def __init__(self, model, last_only: bool = False):
        super().__init__()
        cfg = model.cfg
        self.p, self.d, self.n_heads, self.n_layers = model.n_numbers, cfg.d_model, cfg.n_heads, cfg.n_layers
        self.tied, self.last_only = cfg.tied, last_only
        for name, value in model.weights.items():
            t = torch.tensor(np.asarray(value, dtype=np.float32))
            self.register_parameter(name.replace(".", "__"), torch.nn.Parameter(t))

    def t(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "__"))

    def named_tensors(self) -> dict[str, np.ndarray]:
        return {n.replace("__", "."): p.detach().numpy().copy() for n, p in self.named_parameters()}

    def _linear(self, x, name):
        """x (..., d_in) @ W + b with W (d_in, d_out), as one 2-D addmm."""
        W, b = self.t(name + ".weight"), self.t(name + ".bias")
        return torch.addmm(b, x.reshape(-1, x.shape[-1]), W).view(*x.shape[:-1], W.shape[1])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 -> (B, p) number logits at the last position."""
        B, T = tokens.shape
        d, H = self.d, self.n_heads
        x = self.t("wte.weight")[tokens] + self.t("wpe.weight")[:T]
        for l in range(self.n_layers):
            h = f"h.{l}."
            short = self.last_only and l == self.n_layers - 1
            a = F.layer_norm(x, (d,), self.t(h + "ln_1.weight"), self.t(h + "ln_1.bias"), LN_EPS)
            if short:
                W, b = self.t(h + "attn.c_attn.weight"), self.t(h + "attn.c_attn.bias")
                q = torch.addmm(b[:d], a[:, -1], W[:, :d]).view(B, 1, H, d // H).transpose(1, 2)
                kv = torch.addmm(b[d:], a.reshape(-1, d), W[:, d:]).view(B, T, 2 * d)
                k, v = kv.split(d, dim=2)
                causal = False  # the last query sees every key
                x = x[:, -1:]
            else:
                q, k, v = self._linear(a, h + "attn.c_attn").split(d, dim=2)
                q = q.reshape(B, T, H, d // H).transpose(1, 2)
                causal = True
            k = k.reshape(B, T, H, d // H).transpose(1, 2)
            v = v.reshape(B, T, H, d // H).transpose(1, 2)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            z = z.transpose(1, 2).reshape(B, -1, d)
            x = x + self._linear(z, h + "attn.c_proj")
            m = F.layer_norm(x, (d,), self.t(h + "ln_2.weight"), self.t(h + "ln_2.bias"), LN_EPS)
            x = x + self._linear(F.gelu(self._linear(m, h + "mlp.c_fc"), approximate="tanh"), h + "mlp.c_proj")
        hf = F.layer_norm(x[:, -1], (d,), self.t("ln_f.weight"), self.t("ln_f.bias"), LN_EPS)
        W_U = self.t("wte.weight" if self.tied else "lm_head.weight")[: self.p]
        return hf @ W_U.T


def adamw(model: TorchGPT, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01) -> torch.optim.AdamW:
    """torch.optim.AdamW with fourier_toy's decay rule: matrices decay, biases and gains do not."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)


def train_step(model: TorchGPT, opt, tokens: torch.Tensor, targets: torch.Tensor) -> float:
    """One step: forward, mean cross-entropy at the last position, backward, AdamW."""
    loss = F.cross_entropy(model(tokens), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())
