"""Known-answer models: GPT-2-style transformers whose weights are written by hand, so that the
Fourier-addition mechanism in them is known before any diagnostic looks at it.

    from fourier_toy.plant import PlantSpec, plant, write_plant
    spec = PlantSpec(max_operand=60, d_model=128, n_layers=2, n_heads=4, high_periods=(2, 2.5, 5, 10),
                     high_module="attn", low_module="mlp", noise=0.0, seed=0)
    model, cfg = plant(spec)          # numpy-backend GPT (engine None) and its Config
    path = write_plant(spec, out)     # an ordinary run directory (the trainer's files)

The planted logits for a + b = s are A sum_T cos(2 pi (n - s) / T) (the units digit, written by
``high_module`` of the last layer) plus B sum_k w_k cos(2 pi k (n - c) / N) (the magnitude c, an
approximation of s within magnitude_block - 1, written by ``low_module``), every part on a
single Fourier component of the diagnostics' number axis. ``predict`` computes, from the spec
alone, what the logit lens, the module-logit spectra, the Table 1 filters and the single-pass
filter must find.

Modules, one concept each: spec (PlantSpec), slots (the residual's design coordinates),
logits (the planted answer and every derived number), schedule (which module writes what),
construct (the weights), predict (the diagnostics' expected results), write (the run directory).
"""

from fourier_toy.plant.construct import plant, plant_config, weights
from fourier_toy.plant.logits import Design, design
from fourier_toy.plant.predict import (Outcome, expected_logits, lens_claim, noise_tolerance, predict,
                                       predicted_band_shares, predicted_lens, predicted_single_pass,
                                       predicted_table1)
from fourier_toy.plant.schedule import Writer, writers
from fourier_toy.plant.spec import PlantSpec
from fourier_toy.plant.write import write_plant

__all__ = ["PlantSpec", "plant", "write_plant", "plant_config", "weights", "Design", "design", "Writer", "writers",
           "Outcome", "expected_logits", "predict", "predicted_lens", "predicted_table1", "predicted_single_pass",
           "predicted_band_shares", "lens_claim", "noise_tolerance"]
