"""fourier_toy: small numpy GPT-2 models that add numbers with Fourier features."""

__version__ = "0.1.0"
