"""The training-throughput benchmark "bench-v1" (DESIGN.md) and its PyTorch baseline.

  throughput.py  `fourier-toy bench`: examples/s of the numba and numpy backends (and PyTorch
                 eager with --vs-torch), GFLOP/s against the machine's measured matmul peak
  torch_twin.py  the same GPT-2 in PyTorch, built from a fourier_toy GPT's weights
"""
