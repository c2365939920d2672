"""active_learning: calculations an ML-guided campaign needs to find the hull, vs random order.

The data set is the EMT alloy space: every candidate that ``generate_candidates`` makes for
Al, Cu, Ag, Au, Ni, Pd, Pt with up to 3 components, plus the fcc/bcc/hcp elemental
references, deduplicated and relaxed with EMT (~4,100 relaxations, ~5 min on one core;
cached to a Parquet file under /tmp and reused). Energies are then all known, so
campaigns can be replayed: the elemental references and ``--initial`` random materials are
computed first, then a random forest of the formation energy is trained on what has been
computed, the next ``--batch`` candidates are chosen by predicted distance to the hull of
the computed phases (minus the trees' spread for ``ucb``), and their energies revealed. The
count is the number of calculations done when 90 % of the phases on the full-data hull
have been computed. The baseline computes in random order.

Also printed: the 5-fold CV MAE of the baseline model of the formation energy, with a
parity plot of the out-of-fold predictions.

    .venv/bin/python benchmarks/active_learning.py [--seeds 3 --batch 20 --elements Cu Au Pt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from matdx.ml.active import emt_dataset, on_hull, simulate
from matdx.ml.features import composition_feature_names, featurize
from matdx.ml.model import cross_validate, parity_plot

ELEMENTS = ["Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"]
TARGET = "formation_energy_per_atom"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", nargs="+", default=ELEMENTS)
    ap.add_argument("--max-components", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=None,
                    help="Parquet cache (default /tmp/matdx-ml/emt-<elements>-<k>.parquet)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--fraction", type=float, default=0.9)
    ap.add_argument("--strategies", nargs="+", default=["ucb", "greedy", "random"])
    ap.add_argument("--trees", type=int, default=100, help="trees of the loop's forest")
    ap.add_argument("--plot", type=Path, default=Path("/tmp/matdx-ml/parity_eform.png"))
    args = ap.parse_args()

    cache = args.cache or Path(
        f"/tmp/matdx-ml/emt-{''.join(args.elements)}-{args.max_components}.parquet")
    t0 = time.perf_counter()
    cached = cache.exists()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 500 == 0:
            print(f"  relaxed {done[0]} ({time.perf_counter() - t0:.0f} s)", flush=True)

    df = emt_dataset(args.elements, args.max_components, cache=cache, progress=progress)
    t_data = time.perf_counter() - t0
    hull = on_hull(df)
    n_phases = df.loc[hull, "formula_pretty"].nunique()
    print(f"data set: {len(df)} materials, {n_phases} phases on the hull "
          f"({'read from' if cached else 'computed in'} {t_data:.0f} s, {cache})")

    t0 = time.perf_counter()
    x, names = featurize(df)
    print(f"features: {len(names)} per material in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    cv = cross_validate(df, TARGET, folds=5, seed=0, x=x)
    print(f"5-fold CV MAE of {TARGET} (random forest): {cv['mae']:.4f} ± {cv['mae_std']:.4f} "
          f"eV/atom; predicting the mean: {cv['mae_mean_predictor']:.4f} "
          f"({time.perf_counter() - t0:.0f} s)")
    comp = cross_validate(df, TARGET, folds=5, seed=0, x=x[composition_feature_names()])
    print(f"  composition features only: {comp['mae']:.4f} eV/atom")
    parity_plot(df[TARGET], cv["predictions"], args.plot,
                f"EMT {'-'.join(args.elements)}: E_form, 5-fold CV")
    print(f"  parity plot: {args.plot}")

    seeds = list(range(args.seeds))
    results: dict[str, list[dict]] = {}
    for strategy in args.strategies:
        t0 = time.perf_counter()
        results[strategy] = [
            simulate(df, batch=args.batch, initial=args.initial, strategy=strategy, seed=s,
                     fraction=args.fraction, x=x, model_params={"n_estimators": args.trees})
            for s in seeds
        ]
        print(f"  simulated {strategy}: {time.perf_counter() - t0:.0f} s", flush=True)
    first = next(iter(results.values()))[0]
    print(f"\ncalculations to find {first['n_needed']} of {first['n_targets']} on-hull phases "
          f"({args.fraction:.0%}) among {first['n_total']} materials; batch {args.batch}, "
          f"{int((df['nelements'] == 1).sum())} references + {args.initial} "
          f"random first; seeds {seeds}")
    base = np.mean([r["n_calcs"] for r in results["random"]]) if "random" in results else None
    print(f"{'strategy':<12} {'mean':>7} {'std':>6} {'share':>6} {'vs random':>9}  per seed")
    for strategy, runs in results.items():
        n = np.array([r["n_calcs"] for r in runs])
        ratio = f"{n.mean() / base:.2f}x" if base else "-"
        print(f"{strategy:<12} {n.mean():>7.0f} {n.std():>6.0f} {n.mean() / len(df):>6.0%} "
              f"{ratio:>9}  {n.tolist()}")


if __name__ == "__main__":
    main()
