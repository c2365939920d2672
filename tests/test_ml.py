"""matdx.ml on a real small EMT data set: Cu–Au–Pt candidates relaxed with EMT (~260)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matdx.ml import (
    STRATEGIES,
    TrainedModel,
    cross_validate,
    data_snapshot_id,
    emt_dataset,
    featurize,
    hull_energies,
    on_hull,
    parity_plot,
    propose,
    simulate,
    train,
)
from matdx.ml.features import atomic_fractions, composition_feature_names, structure_feature_names

TARGET = "formation_energy_per_atom"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Generated, deduplicated and EMT-relaxed Cu–Au–Pt space (about 15–30 s)."""
    cache = tmp_path_factory.mktemp("ml") / "cuaupt.parquet"
    df = emt_dataset(["Cu", "Au", "Pt"], max_components=3, cache=cache)
    assert cache.exists()
    return df


@pytest.fixture(scope="module")
def features(data: pd.DataFrame) -> pd.DataFrame:
    x, _ = featurize(data)
    return x


def test_dataset_is_labelled_and_cached(data: pd.DataFrame) -> None:
    assert 200 <= len(data) <= 400
    assert data["material_id"].is_unique
    assert np.isfinite(data[TARGET]).all() and np.isfinite(data["energy_above_hull"]).all()
    assert set(data.loc[data["nelements"] == 1, "formula_pretty"]) == {"Cu", "Au", "Pt"}
    assert isinstance(data["structure"].iloc[0], dict)


def test_features_finite_and_deterministic(data: pd.DataFrame, features: pd.DataFrame) -> None:
    names = composition_feature_names() + structure_feature_names()
    assert list(features.columns) == names and len(set(names)) == len(names)
    assert features.shape == (len(data), len(names))
    assert np.isfinite(features.to_numpy()).all()
    again, names2 = featurize(data.sample(frac=1.0, random_state=1))
    assert names2 == names
    pd.testing.assert_frame_equal(again.loc[features.index], features, check_exact=True)
    assert features.loc[:, features.std() > 0].shape[1] > 50  # most features vary


def test_features_invariant_to_site_order_and_translation() -> None:
    s = Structure(Lattice.cubic(3.8), ["Cu", "Au", "Au", "Au"],
                  [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    t = Structure.from_sites([s[i] for i in (2, 0, 3, 1)])
    t.translate_sites(list(range(len(t))), [0.13, 0.27, 0.41])
    x, _ = featurize(pd.DataFrame({"structure": [s.as_dict(), t.to_json()]}))
    np.testing.assert_allclose(x.iloc[0], x.iloc[1], rtol=1e-9, atol=1e-9)
    assert x.loc[0, "cn_mean"] == 12 and x.loc[0, "spacegroup_number"] == 221  # L1_2
    assert x.loc[0, "frac_unlike_1"] == pytest.approx(0.5)  # Cu has 12 Au, Au 4 Cu + 8 Au


def test_composition_only_features(data: pd.DataFrame, features: pd.DataFrame) -> None:
    x, names = featurize(data[["material_id", "formula_pretty"]])
    assert names == composition_feature_names()
    np.testing.assert_allclose(x.to_numpy(), features[names].to_numpy(), rtol=1e-12)


def test_hull_of_known_phases_reproduces_energy_above_hull(data: pd.DataFrame) -> None:
    _, frac = atomic_fractions(data["formula_pretty"].tolist())
    e = data[TARGET].to_numpy()
    e_hull = e - hull_energies(frac, e, frac)
    np.testing.assert_allclose(e_hull, data["energy_above_hull"], atol=1e-9)


def test_cv_mae_beats_mean_predictor(data: pd.DataFrame, features: pd.DataFrame) -> None:
    cv = cross_validate(data, TARGET, folds=5, seed=0, x=features)
    print(f"\nCV MAE {TARGET}: {cv['mae']:.4f} ± {cv['mae_std']:.4f} eV/atom "
          f"(mean predictor {cv['mae_mean_predictor']:.4f}, n = {len(data)})")
    assert cv["predictions"].shape == (len(data),) and np.isfinite(cv["predictions"]).all()
    assert len(cv["fold_mae"]) == 5
    assert cv["mae"] < 0.5 * cv["mae_mean_predictor"]
    again = cross_validate(data, TARGET, folds=5, seed=0, x=features)
    np.testing.assert_array_equal(again["predictions"], cv["predictions"])


def test_save_load_round_trip(data: pd.DataFrame, features: pd.DataFrame, tmp_path) -> None:
    model = train(data, TARGET, snapshot_id="snap-cuaupt-1", cv_folds=3, x=features,
                  n_estimators=50)
    sidecar = model.save(tmp_path / "models" / "eform.joblib")
    assert sidecar == tmp_path / "models" / "eform.json"
    meta = json.loads(sidecar.read_text())
    for key in ("snapshot_id", "feature_names", "target", "cv_mae", "sklearn_version",
                "training_time_s", "trained_at", "n_train"):
        assert key in meta
    assert meta["snapshot_id"] == "snap-cuaupt-1" and meta["target"] == TARGET
    loaded = TrainedModel.load(tmp_path / "models" / "eform.joblib")
    assert loaded.snapshot_id == "snap-cuaupt-1"
    assert loaded.feature_names == model.feature_names
    head = data.head(20)
    np.testing.assert_array_equal(loaded.predict(head), model.predict(head))
    np.testing.assert_array_equal(loaded.predict(x=features), model.predict(x=features))
    default = train(data.head(60), TARGET, cv_folds=None, x=features.head(60), n_estimators=10)
    assert default.snapshot_id == data_snapshot_id(data.head(60).iloc[::-1], TARGET)
    assert default.snapshot_id != data_snapshot_id(data.head(59), TARGET)


def test_parity_plot_writes_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    path = parity_plot(y, y + 0.1 * rng.normal(size=50), tmp_path / "p" / "parity.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_propose(data: pd.DataFrame, features: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    labelled_idx = rng.choice(len(data), size=80, replace=False)
    mask = np.zeros(len(data), dtype=bool)
    mask[labelled_idx] = True
    mask |= (data["nelements"] == 1).to_numpy()
    lab, cand = data[mask], data[~mask]
    model = train(lab, TARGET, cv_folds=None, x=features[mask], n_estimators=50)
    for strategy in STRATEGIES:
        ids = propose(model, lab, cand, budget=10, strategy=strategy, seed=3,
                      x_candidates=features[~mask])
        assert len(ids) == len(set(ids)) == 10
        assert set(ids) <= set(cand["material_id"])
    assert propose(model, lab, cand, 10, "random", seed=3) == propose(model, lab, cand, 10,
                                                                      "random", seed=3)
    # featurized on the fly, and an ensemble of models
    other = train(lab, TARGET, cv_folds=None, seed=1, x=features[mask], n_estimators=50)
    assert len(propose([model, other], lab, cand.head(30), budget=5, strategy="ucb")) == 5
    gb = train(lab, TARGET, model="gradient_boosting", cv_folds=None, x=features[mask],
               n_estimators=50)
    with pytest.raises(ValueError, match="uncertainty"):
        propose(gb, lab, cand, 5, "ucb", x_candidates=features[~mask])
    assert len(propose(gb, lab, cand, 5, "greedy", x_candidates=features[~mask])) == 5
    with pytest.raises(ValueError, match="unknown strategy"):
        propose(model, lab, cand, 5, "bogus")


def test_active_loop_finds_hull_faster_than_random(
    data: pd.DataFrame, features: pd.DataFrame
) -> None:
    seeds = (0, 1, 2)
    runs = {
        strategy: [simulate(data, batch=10, initial=10, strategy=strategy, seed=s, x=features,
                            model_params={"n_estimators": 100}) for s in seeds]
        for strategy in ("ucb", "random")
    }
    first = runs["ucb"][0]
    n_phases = len(set(data.loc[on_hull(data), "formula_pretty"]))
    assert first["n_targets"] == n_phases >= 6
    loop = [r["n_calcs"] for r in runs["ucb"]]
    rand = [r["n_calcs"] for r in runs["random"]]
    print(f"\ncalculations to find {first['n_needed']}/{first['n_targets']} on-hull phases of "
          f"{first['n_total']} materials (seeds {seeds}): loop {loop} (mean "
          f"{np.mean(loop):.0f}), random order {rand} (mean {np.mean(rand):.0f})")
    for r in runs["ucb"] + runs["random"]:
        assert r["curve"][-1][1] >= r["n_needed"]
        assert r["n_calcs_exact"] <= r["n_calcs"] <= r["n_total"]
        assert len(r["order"]) == len(set(r["order"])) == r["n_calcs"]
    assert np.mean(loop) < 0.6 * np.mean(rand)
