"""Which module of which layer does what in a planted model.

    layer 0      attention  gathers: one group of heads copies a's features (position 0) into the
                            num slot of position 3, another b's features (position 2) into nb
                 MLP        computes the answer's features (slots sh, sl) from products of a's and
                            b's; when low_module = "mlp" it also writes its share of the magnitude
    layers 1..L-1  the low module writes a share of the magnitude (copying sl into low)
    layer L-1    the high module writes the units-digit part (copying sh into high)

Every module that writes the magnitude writes an equal share 1 / W of it (W writers) and the same
share of the edge. So the magnitude appears in the logit lens from the first writer on (layer 0
for an MLP, layer 1 for attention, which needs layer 0's MLP to have computed it first), and the
last layer's low module always writes logits, so its band shares are defined.
"""

from __future__ import annotations

from dataclasses import dataclass

from fourier_toy.plant.spec import PlantSpec


@dataclass(frozen=True)
class Writer:
    """A module that writes the answer's logits: its parts and its share of the magnitude."""

    layer: int
    module: str  # "attn" | "mlp"
    high: bool  # writes the units-digit part (period components)
    low_share: float  # share of the magnitude part and of the edge it writes (0: none)


def low_layers(spec: PlantSpec) -> list[int]:
    """The layers whose low module writes a share of the magnitude."""
    first = 0 if spec.low_module == "mlp" else 1
    return list(range(first, spec.n_layers))


def writers(spec: PlantSpec) -> tuple[Writer, ...]:
    """Every (layer, module) that writes logits, in forward order."""
    lows = low_layers(spec)
    share = 1.0 / len(lows)
    last = spec.n_layers - 1
    out = []
    for layer in range(spec.n_layers):
        for module in ("attn", "mlp"):
            high = layer == last and module == spec.high_module
            low = share if layer in lows and module == spec.low_module else 0.0
            if high or low:
                out.append(Writer(layer, module, high, low))
    return tuple(out)


def first_low_layer(spec: PlantSpec) -> int:
    return low_layers(spec)[0]
