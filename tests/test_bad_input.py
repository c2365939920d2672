"""Property-based bad input: campaign and profile validators never crash and never accept
absurd values; bad structures are refused with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from matdx.core.errors import InputError
from matdx.sites import load_profile
from matdx.workflows.campaign import load_campaign

ROOT = Path(__file__).resolve().parents[1]
GOOD_CAMPAIGN = yaml.safe_load((ROOT / "workflows" / "cu_au_pt.yaml").read_text())
GOOD_PROFILE = yaml.safe_load((ROOT / "hpc_profiles" / "fugaku.yaml").read_text())
TRIED = {"campaign": 0, "profile": 0}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.text(max_size=8), c, max_size=4), max_leaves=10)


def paths(d: dict, prefix=()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from paths(v, (*prefix, k))


def mutate(base: dict, path: tuple, value) -> dict:
    import copy

    out = copy.deepcopy(base)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


def check_one_line(exc: Exception) -> None:
    assert isinstance(exc, InputError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc) and str(exc)


def load_text(loader, tmp_path: Path, text: str):
    p = tmp_path / "in.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    return loader(p)


CAMPAIGN_PATHS = list(paths(GOOD_CAMPAIGN))
PROFILE_PATHS = list(paths(GOOD_PROFILE))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(CAMPAIGN_PATHS), value=values)
def test_campaign_validator_never_crashes(tmp_path_factory, path, value):
    TRIED["campaign"] += 1
    text = yaml.safe_dump(mutate(GOOD_CAMPAIGN, path, value), allow_unicode=True)
    try:
        loaded = load_text(load_campaign, tmp_path_factory.mktemp("c"), text)
    except Exception as exc:
        check_one_line(exc)
        return
    space = loaded.spec.chemical_space
    assert 1 <= space.max_atoms <= 500 and loaded.spec.batch_size >= 1
    assert all(isinstance(e, str) for e in space.elements)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=300))
def test_arbitrary_text_as_a_campaign_file(tmp_path_factory, text):
    TRIED["campaign"] += 1
    with pytest.raises(Exception) as info:
        load_text(load_campaign, tmp_path_factory.mktemp("t"), text)
    check_one_line(info.value)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(PROFILE_PATHS), value=values)
def test_profile_validator_never_crashes(tmp_path_factory, path, value):
    TRIED["profile"] += 1
    text = yaml.safe_dump(mutate(GOOD_PROFILE, path, value), allow_unicode=True)
    try:
        prof = load_text(load_profile, tmp_path_factory.mktemp("p"), text)
    except Exception as exc:
        check_one_line(exc)
        return
    lay = prof.default_layout
    assert lay.ranks_per_node * lay.threads_per_rank <= prof.node.cores_per_node


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("chemical_space", "max_atoms"), 0),
        (("chemical_space", "max_atoms"), 10**9),
        (("chemical_space", "elements"), ["Cu", "Unobtainium"]),
        (("chemical_space", "elements"), []),
        (("chemical_space", "min_distance"), -1.0),
        (("prescreen", "steps"), 0),
        (("prescreen", "fmax"), float("nan")),
        (("batch_size", ), 0),
        (("name", ), "a/../../etc"),
        (("name", ), "x; rm -rf /"),
        (("name", ), "$(id)"),
        (("name", ), "`id`"),
        (("name", ), "two\nlines"),
    ],
)
def test_absurd_campaign_values_are_refused(tmp_path, path, value):
    text = yaml.safe_dump(mutate(GOOD_CAMPAIGN, path, value))
    with pytest.raises(InputError) as info:
        load_text(load_campaign, tmp_path, text)
    check_one_line(info.value)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("default_layout", "ranks_per_node"), 8, "default_layout"),
        (("resource_groups", "small", "max_elapse"), "-5h", "max_elapse"),
        (("node", "cores_per_node"), 0, "cores_per_node"),
        (("setup",), ["ok", "evil\nrm -rf /"], "setup"),
        (("colour",), "blue", "colour"),
    ],
)
def test_absurd_profile_values_are_refused(tmp_path, path, value, field):
    text = yaml.safe_dump(mutate(GOOD_PROFILE, path, value))
    with pytest.raises(InputError) as info:
        load_text(load_profile, tmp_path, text)
    check_one_line(info.value)
    assert field in str(info.value)


def test_overlapping_atoms_and_singular_cells_are_refused():
    from matdx.engines.emt.core import relax

    overlap = Structure(Lattice.cubic(3.6), ["Cu", "Cu"], [[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(InputError, match="closer than"):
        relax(overlap)
    flat = Structure(Lattice(np.array([[3.6, 0, 0], [0, 3.6, 0], [1.8, 1.8, 0.0]]) + 1e-9),
                     ["Cu"], [[0, 0, 0]])
    with pytest.raises(InputError, match="singular"):
        relax(flat)


def test_hypothesis_tried_many_bad_inputs():
    # reported in the closing note of the reliability issue
    print(f"hypothesis inputs tried: {TRIED}")
    assert TRIED["campaign"] >= 300 and TRIED["profile"] >= 300
