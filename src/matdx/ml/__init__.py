"""Machine learning on screening results: descriptors, baseline models, active learning.

Everything works on pandas DataFrames whose rows are materials (``material_id``,
``formula_pretty``, ``structure`` and target columns such as
``formation_energy_per_atom``), independently of the database. scikit-learn is imported
only when a model is built (``pip install matdx[ml]``).
"""

from __future__ import annotations

from matdx.ml.active import STRATEGIES, emt_dataset, hull_energies, on_hull, propose, simulate
from matdx.ml.features import featurize
from matdx.ml.model import (
    MODELS,
    TrainedModel,
    cross_validate,
    data_snapshot_id,
    parity_plot,
    train,
)

__all__ = [
    "MODELS",
    "STRATEGIES",
    "TrainedModel",
    "cross_validate",
    "data_snapshot_id",
    "emt_dataset",
    "featurize",
    "hull_energies",
    "on_hull",
    "parity_plot",
    "propose",
    "simulate",
    "train",
]
