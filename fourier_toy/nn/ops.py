"""Plain numpy forward/backward pairs: the oracle every faster kernel is tested against.

Each op is a pair `X_forward(...) -> (out, cache)` and `X_backward(dout, cache) -> grads`.
Shapes use B = batch, T = sequence length, D = width, H = heads, Dh = head size.
The ops work in the dtype they are given (float32 for training, float64 for gradient checks).
"""

from __future__ import annotations

import numpy as np

from fourier_toy.config import GELU_C, GELU_K, LN_EPS  # Python floats, so float32 inputs stay float32


# ---- embedding ---------------------------------------------------------------------------------

def embedding_forward(tokens, wte, wpe):
    """tokens (B, T) int, wte (V, D), wpe (n_ctx, D) -> x (B, T, D) = wte[tokens] + wpe[:T]."""
    T = tokens.shape[1]
    x = wte[tokens] + wpe[:T]
    return x, (tokens, wte.shape, wpe.shape)


def embedding_backward(dx, cache):
    """dx (B, T, D) -> (dwte (V, D), dwpe (n_ctx, D))."""
    tokens, wte_shape, wpe_shape = cache
    dwte = np.zeros(wte_shape, dtype=dx.dtype)
    # A token can repeat inside a batch, so the scatter must accumulate.
    np.add.at(dwte, tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    dwpe = np.zeros(wpe_shape, dtype=dx.dtype)
    dwpe[: tokens.shape[1]] = dx.sum(axis=0)
    return dwte, dwpe


# ---- layer norm --------------------------------------------------------------------------------

def layernorm_forward(x, w, b, eps=LN_EPS):
    """x (..., D), w (D,), b (D,) -> y (..., D); biased variance, as GPT-2."""
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    return xhat * w + b, (xhat, rstd, w)


def layernorm_backward(dy, cache):
    """dy (..., D) -> (dx (..., D), dw (D,), db (D,))."""
    xhat, rstd, w = cache
    lead = tuple(range(dy.ndim - 1))
    dw = (dy * xhat).sum(axis=lead)
    db = dy.sum(axis=lead)
    dxhat = dy * w
    dx = rstd * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, dw, db


# ---- linear ------------------------------------------------------------------------------------

def linear_forward(x, W, b):
    """x (..., Din), W (Din, Dout) used as x @ W (GPT-2 Conv1D layout), b (Dout,) -> (..., Dout)."""
    return x @ W + b, (x, W)


def linear_backward(dy, cache):
    """dy (..., Dout) -> (dx (..., Din), dW (Din, Dout), db (Dout,))."""
    x, W = cache
    # One 2-D matmul each: a 3-D `dy @ W.T` would run as a batch of small matmuls.
    dy2 = dy.reshape(-1, dy.shape[-1])
    dW = x.reshape(-1, x.shape[-1]).T @ dy2
    return (dy2 @ W.T).reshape(*dy.shape[:-1], W.shape[0]), dW, dy2.sum(axis=0)


# ---- gelu (tanh approximation, as GPT-2) -------------------------------------------------------

def gelu_forward(x):
    """Elementwise, any shape."""
    t = np.tanh(GELU_C * (x + GELU_K * (x * x * x)))
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_backward(dy, cache):
    x, t = cache
    dt = GELU_C * (1.0 + 3 * GELU_K * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dt)


# ---- causal self-attention core -----------------------------------------------------------------

def attention_forward(q, k, v):
    """Causal softmax attention of the last Tq queries over Tk keys.

    q (B, H, Tq, Dh), k and v (B, H, Tk, Dh), Tq <= Tk: query i sits at position Tk - Tq + i,
    so Tq = 1 is the last position only. Returns z (B, H, Tq, Dh); cache holds the pattern
    (B, H, Tq, Tk).
    """
    Tq, Tk = q.shape[2], k.shape[2]
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = (q @ k.swapaxes(-1, -2)) * q.dtype.type(scale)
    qpos = np.arange(Tk - Tq, Tk)[:, None]
    scores = np.where(np.arange(Tk)[None, :] > qpos, -np.inf, scores)
    # Max-subtraction keeps exp finite; a NaN score stays NaN through max and exp.
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    pattern = e / e.sum(axis=-1, keepdims=True)
    return pattern @ v, (q, k, v, pattern)


def attention_backward(dz, cache):
    """dz (B, H, Tq, Dh) -> (dq, dk, dv) with the shapes of q, k, v."""
    q, k, v, pattern = cache
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    dpattern = dz @ v.swapaxes(-1, -2)
    dv = pattern.swapaxes(-1, -2) @ dz
    dscores = pattern * (dpattern - (dpattern * pattern).sum(axis=-1, keepdims=True))
    dscores *= scale
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


# ---- softmax cross-entropy ----------------------------------------------------------------------

def cross_entropy_forward(logits, targets):
    """logits (B, C), targets (B,) int -> mean loss over the batch (a 0-d array)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    logp = shifted - logz
    loss = -logp[np.arange(len(targets)), targets].mean()
    return loss, (np.exp(logp), targets)


def cross_entropy_backward(dloss, cache):
    """dloss scalar -> dlogits (B, C)."""
    probs, targets = cache
    dlogits = probs.copy()
    dlogits[np.arange(len(targets)), targets] -= 1.0
    return dlogits * (dloss / len(targets))
