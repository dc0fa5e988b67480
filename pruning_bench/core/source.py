"""What a control trial gets of its source trial: the source's final per-layer table and masks.

A *control* (``reinit``, ``shuffle``, ``scratch``; docs/methods.md §13) trains something derived from
another trial's result: the *source*, the trial of method M in the same cell (target sparsity, budget
level) and seed. Every finished trial records two artifacts a control reads back:

- ``layer_sparsity.csv``: per prunable tensor its shape, size and nonzero count (for a physically
  shrunk model, the shrunk shapes: the architecture a ``scratch`` control rebuilds);
- ``masks.pt``: the final keep-masks, bit-packed (one bit per weight; 34 KB for ResNet-20).

``random[distribution=csv]`` reads the same table (:func:`layer_counts`), so a random mask with another
trial's layer-wise densities and ``shuffle[source=M]`` are one mechanism.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pruning_bench.errors import BenchError

MASKS_ARTIFACT = "masks.pt"
LAYERS_ARTIFACT = "layer_sparsity.csv"


@dataclass(frozen=True)
class LayerRecord:
    """One prunable tensor of a finished trial (a row of ``layer_sparsity.csv``)."""

    shape: tuple[int, ...]
    nonzero: int


@dataclass(frozen=True)
class SourceResult:
    """The finished source trial of a control: its method, key, run, layers and (if recorded) masks."""

    method: str
    key: str
    run_id: str
    layers: dict[str, LayerRecord]
    masks: dict[str, torch.Tensor] | None = None
    structured: bool = False

    def kept_counts(self) -> dict[str, int]:
        """Kept weights per layer: the masks' counts when recorded, else the table's nonzero counts."""
        if self.masks is not None:
            return {n: int(m.sum()) for n, m in self.masks.items()}
        return {n: r.nonzero for n, r in self.layers.items()}


def read_layer_table(path: str | Path, who: str = "source") -> dict[str, LayerRecord]:
    """The rows of a ``layer_sparsity.csv`` artifact by layer name; a one-line error for a bad file."""
    file = Path(path)
    if not file.is_file():
        raise BenchError(f"{who}: '{path}' is not a file; give a layer_sparsity.csv artifact")
    try:
        with file.open(newline="") as fh:
            return {r["layer"]: LayerRecord(tuple(int(d) for d in r["shape"].split("x")), int(r["nonzero"]))
                    for r in csv.DictReader(fh)}
    except (KeyError, ValueError, AttributeError) as err:
        raise BenchError(f"{who}: '{path}' is not a layer_sparsity.csv artifact ({type(err).__name__}: {err}); "
                         "it needs columns layer, shape (e.g. 64x1x5) and nonzero") from None


def layer_counts(layers: Mapping[str, LayerRecord], shapes: Mapping[str, tuple[int, ...]],
                 counts: Mapping[str, int] | None = None, who: str = "source") -> dict[str, int]:
    """Kept weights per layer of this model from another trial's layers (``counts`` overrides the table's
    nonzero counts), after checking both name the same layers with the same shapes."""
    if set(layers) != set(shapes):
        raise BenchError(f"{who}: the source lists layers {sorted(layers)}, this model has {sorted(shapes)}")
    for name, shape in shapes.items():
        if layers[name].shape != tuple(shape):
            raise BenchError(f"{who}: the source's {name} is {_dims(layers[name].shape)}, this model's "
                             f"{_dims(shape)} (a physically shrunk source: use scratch[source=...])")
    return {n: int((counts or {}).get(n, layers[n].nonzero)) for n in shapes}


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def save_masks(masks: Mapping[str, torch.Tensor], path: Path) -> None:
    """Bit-packed keep-masks: per layer its shape and ``numpy.packbits`` of the flat mask."""
    packed = {n: (tuple(m.shape), np.packbits(m.detach().cpu().numpy().reshape(-1).astype(bool)))
              for n, m in masks.items()}
    torch.save(packed, path)


def load_masks(path: Path) -> dict[str, torch.Tensor]:
    """The boolean masks :func:`save_masks` wrote."""
    packed = torch.load(path, weights_only=False)
    out = {}
    for name, (shape, bits) in packed.items():
        flat = np.unpackbits(bits)[:math.prod(shape)].astype(bool)
        out[name] = torch.from_numpy(flat.copy()).view(shape)
    return out
