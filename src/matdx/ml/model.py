"""Baseline regression models of formation energy and energy above hull.

Models are scikit-learn pipelines (median imputation, then a tree ensemble) chosen by
name from :data:`MODELS`. Tree ensembles give a predictive uncertainty for free: the
spread of the individual trees' predictions (:func:`predict_with_std`), which the active
learning loop uses.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdx.core.hashing import stable_hash
from matdx.ml.features import FEATURES_VERSION, feature_matrix, featurize


def _random_forest(seed: int, n_jobs: int, **params: Any) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    opts = {"n_estimators": 200, "max_features": 0.33, "min_samples_leaf": 1}
    return RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **{**opts, **params})


def _extra_trees(seed: int, n_jobs: int, **params: Any) -> Any:
    from sklearn.ensemble import ExtraTreesRegressor

    opts = {"n_estimators": 200, "max_features": 0.5, "min_samples_leaf": 1}
    return ExtraTreesRegressor(random_state=seed, n_jobs=n_jobs, **{**opts, **params})


def _gradient_boosting(seed: int, n_jobs: int, **params: Any) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    opts = {"n_estimators": 400, "learning_rate": 0.05, "max_depth": 4, "subsample": 0.8}
    return GradientBoostingRegressor(random_state=seed, **{**opts, **params})


MODELS: dict[str, Callable[..., Any]] = {
    "random_forest": _random_forest,
    "extra_trees": _extra_trees,
    "gradient_boosting": _gradient_boosting,
}
"""Regressor factories ``(seed, n_jobs, **params) -> estimator``. Only the forests have a
per-tree uncertainty."""


def make_model(name: str = "random_forest", seed: int = 0, n_jobs: int = 1, **params: Any) -> Any:
    """A fresh scikit-learn pipeline: median imputation, then regressor ``name``.

    Raises
    ------
    ValueError
        For a name not in :data:`MODELS`.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    regressor = MODELS[name](seed, n_jobs, **params)
    return Pipeline([("impute", SimpleImputer(strategy="median")), ("model", regressor)])


def predict_with_std(pipeline: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the predictions of a fitted ensemble's members.

    Raises
    ------
    ValueError
        If the final estimator has no members (e.g. gradient boosting).
    """
    est = pipeline[-1]
    members = getattr(est, "estimators_", None)
    # boosting keeps an array of residual trees, which are no predictions on their own
    if not isinstance(members, list) or not members:
        raise ValueError(f"{type(est).__name__} gives no per-member uncertainty")
    xt = pipeline[:-1].transform(x)
    subsets = getattr(est, "estimators_features_", None)  # bagging of any regressor
    if subsets is None:
        preds = np.stack([m.predict(xt) for m in members])
    else:
        preds = np.stack([m.predict(xt[:, f]) for m, f in zip(members, subsets, strict=True)])
    return preds.mean(axis=0), preds.std(axis=0)


def data_snapshot_id(df: pd.DataFrame, target: str) -> str:
    """A short hash of the material ids and target values of ``df`` (order-independent)."""
    pairs = sorted(zip(df["material_id"].astype(str), np.round(df[target].to_numpy(float), 8),
                       strict=True))
    return "snap-" + stable_hash([[m, float(v)] for m, v in pairs], 16)


def _xy(df: pd.DataFrame, target: str, x: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray]:
    if target not in df.columns:
        raise KeyError(f"no target column {target!r}")
    y = df[target].to_numpy(dtype=float)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"target {target!r} has missing or non-finite values")
    if x is None:
        x, _ = featurize(df)
    return x, y


def cross_validate(
    df: pd.DataFrame,
    target: str,
    folds: int = 5,
    seed: int = 0,
    model: str = "random_forest",
    x: pd.DataFrame | None = None,
    groups: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    """K-fold cross-validated mean absolute error of model ``model`` on ``target``.

    Parameters
    ----------
    df
        Materials with the feature inputs (see :func:`~matdx.ml.features.featurize`) and
        the ``target`` column.
    target
        Column to predict, e.g. ``"formation_energy_per_atom"``.
    folds
        Number of folds.
    seed
        Seed of the shuffle and of the model.
    model
        Name in :data:`MODELS`.
    x
        Precomputed features of ``df`` (computed if omitted).
    groups
        Column whose values are kept together in one fold (``GroupKFold``), e.g.
        ``"chemsys"`` to measure extrapolation to unseen chemical systems.
    **params
        Passed to the regressor.

    Returns
    -------
    dict
        ``mae`` and ``mae_std`` (mean and standard deviation over folds, eV/atom),
        ``fold_mae``, ``mae_mean_predictor`` (MAE of predicting each training fold's mean),
        and ``predictions``: out-of-fold predictions aligned with the rows of ``df``.
    """
    from sklearn.model_selection import GroupKFold, KFold

    x, y = _xy(df, target, x)
    arr = x.to_numpy(dtype=float)
    if groups is None:
        splits = KFold(folds, shuffle=True, random_state=seed).split(arr)
    else:
        splits = GroupKFold(folds).split(arr, y, df[groups].to_numpy())
    pred = np.full(len(y), np.nan)
    fold_mae, base_mae = [], []
    for train_idx, test_idx in splits:
        pipe = make_model(model, seed, **params).fit(arr[train_idx], y[train_idx])
        pred[test_idx] = pipe.predict(arr[test_idx])
        fold_mae.append(float(np.mean(np.abs(pred[test_idx] - y[test_idx]))))
        base_mae.append(float(np.mean(np.abs(y[train_idx].mean() - y[test_idx]))))
    return {
        "mae": float(np.mean(fold_mae)),
        "mae_std": float(np.std(fold_mae)),
        "fold_mae": fold_mae,
        "mae_mean_predictor": float(np.mean(base_mae)),
        "predictions": pred,
    }


@dataclass
class TrainedModel:
    """A fitted pipeline with what is needed to use and audit it.

    Attributes
    ----------
    pipeline
        The fitted scikit-learn pipeline (input: features in ``feature_names`` order).
    feature_names
        Feature columns, in the order the pipeline expects.
    target
        Predicted column.
    metadata
        Provenance: ``snapshot_id``, ``model``, ``params``, ``cv_mae``, ``cv_mae_std``,
        ``n_train``, ``sklearn_version``, ``features_version``, ``trained_at``,
        ``training_time_s``, ``structure_features``.
    """

    pipeline: Any
    feature_names: list[str]
    target: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def snapshot_id(self) -> str | None:
        """Identifier of the data the model was trained on."""
        return self.metadata.get("snapshot_id")

    def features(self, df: pd.DataFrame) -> np.ndarray:
        """Features of ``df`` as the pipeline expects them."""
        x, _ = featurize(df, structure=self.metadata.get("structure_features"))
        return feature_matrix(x, self.feature_names)

    def predict(self, df: pd.DataFrame | None = None, x: pd.DataFrame | None = None) -> np.ndarray:
        """Predictions for the materials of ``df`` (or for precomputed features ``x``)."""
        arr = self.features(df) if x is None else feature_matrix(x, self.feature_names)
        return self.pipeline.predict(arr)

    def predict_with_std(
        self, df: pd.DataFrame | None = None, x: pd.DataFrame | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of the ensemble members' predictions (see :func:`predict_with_std`)."""
        arr = self.features(df) if x is None else feature_matrix(x, self.feature_names)
        return predict_with_std(self.pipeline, arr)

    def save(self, path: str | Path) -> Path:
        """Pickle the model to ``path`` and write the metadata to ``path`` with ``.json``.

        Returns
        -------
        Path
            The JSON sidecar.
        """
        import joblib

        path = Path(path)
        sidecar = _sidecar(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"pipeline": self.pipeline, "feature_names": self.feature_names,
                     "target": self.target, "metadata": self.metadata}, path)
        doc = {**self.metadata, "target": self.target, "feature_names": self.feature_names}
        sidecar.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
        return sidecar

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        """Read a model written by :meth:`save`; warn if scikit-learn's version differs."""
        import joblib
        import sklearn

        path = Path(path)
        obj = joblib.load(path)
        sidecar = _sidecar(path)
        meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        if meta and meta.get("feature_names") != obj["feature_names"]:
            raise ValueError(f"{sidecar} does not describe {path}: feature names differ")
        saved = obj["metadata"].get("sklearn_version")
        if saved and saved != sklearn.__version__:
            warnings.warn(f"model saved with scikit-learn {saved}, loaded with "
                          f"{sklearn.__version__}", stacklevel=2)
        return cls(obj["pipeline"], list(obj["feature_names"]), obj["target"], obj["metadata"])


def _sidecar(path: Path) -> Path:
    if path.suffix == ".json":
        raise ValueError("the model file cannot end in .json (that is its sidecar)")
    return path.with_suffix(".json")


def train(
    df: pd.DataFrame,
    target: str,
    snapshot_id: str | None = None,
    model: str = "random_forest",
    seed: int = 0,
    cv_folds: int | None = 5,
    x: pd.DataFrame | None = None,
    n_jobs: int = 1,
    **params: Any,
) -> TrainedModel:
    """Fit model ``model`` on all of ``df`` (after a cross-validation if ``cv_folds``).

    Parameters
    ----------
    df
        Training materials.
    target
        Column to predict.
    snapshot_id
        Identifier of the data snapshot (default: :func:`data_snapshot_id` of ``df``).
    model
        Name in :data:`MODELS`.
    seed
        Seed of the model (and of the CV split).
    cv_folds
        Folds of the cross-validation recorded in the metadata; ``None`` to skip it.
    x
        Precomputed features of ``df``.
    n_jobs
        Parallel jobs of the forest.
    **params
        Passed to the regressor.

    Returns
    -------
    TrainedModel
        Fitted on every row.
    """
    import sklearn

    x, y = _xy(df, target, x)
    names = list(x.columns)
    meta: dict[str, Any] = {
        "snapshot_id": snapshot_id or data_snapshot_id(df, target),
        "model": model,
        "params": params,
        "seed": seed,
        "n_train": len(y),
        "sklearn_version": sklearn.__version__,
        "features_version": FEATURES_VERSION,
        "structure_features": "nsites" in names,
    }
    if cv_folds:
        cv = cross_validate(df, target, cv_folds, seed, model, x=x, **params)
        meta.update(cv_mae=cv["mae"], cv_mae_std=cv["mae_std"], cv_folds=cv_folds,
                    cv_mae_mean_predictor=cv["mae_mean_predictor"])
    start = time.perf_counter()
    pipe = make_model(model, seed, n_jobs, **params).fit(feature_matrix(x, names), y)
    meta["training_time_s"] = time.perf_counter() - start
    meta["trained_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return TrainedModel(pipe, names, target, meta)


def parity_plot(
    y_true: Sequence[float] | np.ndarray,
    y_pred: Sequence[float] | np.ndarray,
    path: str | Path,
    title: str = "",
    units: str = "eV/atom",
) -> Path:
    """Predicted against computed values, with the MAE, written to ``path`` (Agg backend).

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    fig = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(t, p, s=8, alpha=0.6, edgecolors="none")
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"computed ({units})")
    ax.set_ylabel(f"predicted ({units})")
    ax.set_title(title, fontsize=9)
    mae = float(np.mean(np.abs(t - p)))
    ax.text(0.04, 0.94, f"MAE {mae:.4f} {units}\nn = {len(t)}", transform=ax.transAxes, va="top")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
