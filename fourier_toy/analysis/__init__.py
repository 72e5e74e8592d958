"""The paper's diagnostics of a trained model or a number-embedding matrix.

  fourier.py   the Fourier bases (exact real DFT, the paper's Definition A.3), spectra, bands, Phi_T
  outliers.py  prominence outliers, tested against each matrix's row-permutation null
  lens.py      logit lens per layer and the Fourier spectra of module logits
  filters.py   the null-space low/high-pass filter (Definition A.6), Table 1, single-pass filters
  probes.py    linear probes for n mod T, scored by Cohen's kappa
  diagnose.py  the per-run reports (spectrum, lens, ablate, probe) as JSON-able dicts and tables
  plots.py     their figures, written atomically

Models are read through the numpy reference (nn/); this package never calls the fast engine.
"""
