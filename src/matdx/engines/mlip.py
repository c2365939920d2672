"""Universal machine-learned potentials: the pretrained model, loaded once per process.

CHGNet (``pip install 'matdx[mlip]'``) ships its pretrained weights in its wheel, so that
nothing is downloaded at run time. Its model is loaded on first use and kept for the
process (loading takes about a second; a pre-screen evaluates it thousands of times).
Energies, forces and stresses come in the units and sign conventions of CHGNet's own ASE
calculator (:class:`chgnet.model.dynamics.CHGNetCalculator`): eV, eV/Å, eV/Å³.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from matdx.core.errors import EngineError

if TYPE_CHECKING:
    from ase import Atoms

CHGNET_MODEL = "0.3.0"
"""The pretrained CHGNet model used (MPtrj, PBE/PBE+U; the one CHGNet loads by default)."""

CHGNET_MAX_Z = 94
"""CHGNet's element embedding covers atomic numbers 1-94."""


def chgnet_version() -> str:
    """Installed CHGNet version and model, e.g. ``"CHGNet 0.4.2 (model 0.3.0)"``."""
    from importlib.metadata import version

    return f"CHGNet {version('chgnet')} (model {CHGNET_MODEL})"


@cache
def load_chgnet() -> Any:
    """The pretrained CHGNet model on the CPU (loaded once per process).

    Raises
    ------
    EngineError
        If CHGNet is not installed.
    """
    try:
        from chgnet.model import CHGNet
    except ImportError:
        raise EngineError("CHGNet is not installed: pip install 'matdx[mlip]'") from None
    return CHGNet.load(model_name=CHGNET_MODEL, use_device="cpu", verbose=False)


def chgnet_calculator() -> Any:
    """CHGNet's own ASE calculator around the process's model."""
    from chgnet.model.dynamics import CHGNetCalculator

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device it runs on
        return CHGNetCalculator(model=load_chgnet(), use_device="cpu")


def evaluate(atoms: Sequence[Atoms], batch_size: int = 16) -> None:
    """Compute energy, forces, stress and magnetic moments of many structures in batches.

    Each structure must carry a calculator of :func:`chgnet_calculator`; its results are
    set as that calculator would set them for the structure's present state, so that the
    next ``get_forces()``/``get_stress()`` (of an optimizer, a filter) read them instead of
    evaluating the model once more for that structure alone.

    Parameters
    ----------
    atoms
        Structures with CHGNet calculators.
    batch_size
        Structures per forward pass of the model.
    """
    if not atoms:
        return
    from pymatgen.io.ase import AseAtomsAdaptor

    model = load_chgnet()
    graphs = [model.graph_converter(AseAtomsAdaptor.get_structure(a)) for a in atoms]
    with warnings.catch_warnings():  # torch's note on a tensor CHGNet makes internally
        warnings.filterwarnings("ignore", "Converting a tensor with requires_grad", UserWarning)
        predictions = model.predict_graph(graphs, task="efsm", batch_size=batch_size)
    if len(graphs) == 1:
        predictions = [predictions]
    for a, pred in zip(atoms, predictions, strict=True):
        calc = a.calc
        n = len(a) if model.is_intensive else 1
        calc.reset()
        calc.atoms = a.copy()
        calc.results = {
            "energy": pred["e"] * n,
            "free_energy": pred["e"] * n,
            "forces": pred["f"],
            "stress": pred["s"] * calc.stress_weight,
            "magmoms": pred["m"],
        }
