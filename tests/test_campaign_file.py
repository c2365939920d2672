from __future__ import annotations

from pathlib import Path

import pytest

from matdx.core.errors import CampaignError
from matdx.workflows.campaign import load_campaign

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: t1
chemical_space:
  elements: [Cu, Au]
  max_components: 2
prescreen:
  engine: emt
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_campaigns_validate():
    for path in sorted((ROOT / "workflows").glob("*.yaml")):
        loaded = load_campaign(path)
        assert loaded.spec.name
        assert len(loaded.settings_hash) == 16


def test_good_campaign_defaults(tmp_path):
    loaded = load_campaign(write(tmp_path, GOOD))
    assert loaded.spec.batch_size == 50
    assert loaded.spec.ranking.key == "energy_above_hull"
    assert loaded.settings == {"engine": "emt", "relax_cell": True, "optimizer": "BFGS",
                               "fmax": 0.05, "steps": 300}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("[Cu, Au]", "[Cu, Xx]"), "line 3, field chemical_space.elements: unknown element 'Xx'"),
        (GOOD.replace("[Cu, Au]", "[Cu, Fe]"), "line 3, field chemical_space.elements: engine 'emt' does not support Fe"),
        (GOOD.replace("max_components: 2", "max_components: 2\n  prototypes: [fcc, A15]"), "line 5, field chemical_space.prototypes: unknown prototype 'A15'"),
        (GOOD + "colour: blue\n", "line 7, field colour: unknown field"),
        (GOOD.replace("engine: emt", "engine: emt\n  fmax: -1"), "line 7, field prescreen.fmax: Input should be greater than 0"),
        (GOOD.replace("engine: emt", "engine: vasp9"), "line 6, field prescreen.engine: unknown engine 'vasp9'"),
        (GOOD.replace("name: t1", "name: 'a b;rm -rf /'"), "line 1, field name: String should match pattern"),
        (GOOD.replace("max_components: 2", "max_components: 2\n  max_atoms: 1000000000"), "field chemical_space.max_atoms"),
        (GOOD.replace("elements: [Cu, Au]", "elements: [Cu, Au"), "malformed YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        (GOOD.replace("name: t1\n", ""), "field name: Field required"),
        (GOOD + "batch_size: many\n", "line 7, field batch_size: Input should be a valid integer"),
    ],
)
def test_bad_campaigns_give_one_line_with_line_and_field(tmp_path, text, expected):
    with pytest.raises(CampaignError) as info:
        load_campaign(write(tmp_path, text))
    msg = str(info.value)
    assert expected in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(CampaignError, match="does not exist"):
        load_campaign(tmp_path / "nope.yaml")
