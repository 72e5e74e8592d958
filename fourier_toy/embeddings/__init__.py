"""Number-token rows for the embedding: Fourier features, and pre-trained rows to transplant.

  fourier_rows.py  cos/sin features of chosen periods plus a magnitude part, mapped to d_model
  pretrained.py    readers of pre-trained rows (.npy/.npz, a Hugging Face GPT-2 folder, a run)
                   and width adaptation (PCA or padding)

Each returns float64 (n_numbers, width) rows; training/build.py writes them into `wte`. The toy
source, rows from a small model fourier_toy pre-trains itself, lives in training/toy_source.py
because it trains.
"""
