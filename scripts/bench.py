#!/usr/bin/env python3
"""Throughput benchmark bench-v1: `python scripts/bench.py --vs-torch` (see fourier_toy/bench.py)."""

import sys

from fourier_toy.bench.throughput import main

if __name__ == "__main__":
    sys.exit(main())
