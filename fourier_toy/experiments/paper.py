"""The paper's GPT-2 numbers (Zhou et al. 2024, as collected in the project's PAPER.md), as data.

Every comparison in a report reads its reference value from here, never from a literal elsewhere.
"""

from __future__ import annotations

PAPER = "Zhou, Fu, Sharan, Jia, 'Pre-trained Large Language Models Use Fourier Features to Compute Addition', NeurIPS 2024"

# Section 2: test accuracies.
ACCURACY = {
    "gpt2_xl_pretrained_finetuned": 0.9974,
    "gpt2_xl_from_scratch": 0.9444,
    "gpt2_small_from_scratch": 0.5395,
    "gpt2_small_frozen_pretrained_embeddings": 1.0,  # 5 of 5 seeds, faster convergence
}

# Section 4: the periods of the Fourier outliers, and the high/low threshold on k at N = 520.
OUTLIER_PERIODS = (2.0, 2.5, 5.0, 10.0)
TAU_AT_520 = 50

# Section 4: single-pass filter keeping period 2 predicts parity with this accuracy.
SINGLE_PASS_PARITY = 0.9959

# Section 5, Table 1 (fine-tuned GPT-2-XL, tau = 50, test set): (module, removed) -> (loss, accuracy).
TABLE1 = {
    ("none", "-"): (0.0073, 0.9974),
    ("attn+mlp", "low"): (4.0842, 0.0594),
    ("attn", "low"): (0.0352, 0.9912),
    ("mlp", "low"): (2.1399, 0.3589),
    ("attn+mlp", "high"): (1.8598, 0.2708),
    ("attn", "high"): (0.5943, 0.7836),
    ("mlp", "high"): (0.1213, 0.9810),
}

# Section 5: error types under ablation (fractions of the errors).
ERRORS_MLP_LOW_REMOVED_MULTIPLE_OF_10 = 1.0  # "every error a multiple of 10"
ERRORS_ATTN_HIGH_REMOVED_BELOW_6 = 1.0  # "every error below 6 in magnitude"

# Section 6: prominence of the periodic outliers of a real pre-trained embedding (the shared
# Whisper tiny.en rows 0..519): period -> prominence; a row-permuted control gives 0.8-1.1.
REAL_EMBEDDING_PROMINENCE = {10.0: 2.78, 5.0: 3.37, 10.0 / 3.0: 3.26, 2.5: 3.69, 2.0: 3.17}
