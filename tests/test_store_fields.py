"""The summary's one field list: what queries, exports and masks derive from; Store reads."""

from __future__ import annotations

import ast
import graphlib
import json
from pathlib import Path
from typing import ClassVar

import pytest
from mongoengine import Document, FloatField, ListField, StringField

from matdx.core.errors import InputError
from matdx.store import query as q
from matdx.store.access import DERIVED_FIELDS, Caller, mask_derived
from matdx.store.documents import SUMMARY
from matdx.store.export import COLUMNS, flatten
from matdx.store.fields import About, FieldList

STORE = Path(__file__).resolve().parents[1] / "src" / "matdx" / "store"


def test_export_columns_query_fields_and_masks_come_from_the_declarations():
    assert COLUMNS == [
        "material_id", "formula_pretty", "chemsys", "elements", "nelements", "nsites",
        "formula_anonymous", "composition", "composition_reduced",
        "spacegroup_symbol", "spacegroup_number", "crystal_system", "volume", "density",
        "energy_per_atom", "formation_energy_per_atom", "energy_above_hull", "is_stable",
        "converged", "volume_per_atom", "decomposes_to",
        "tier", "owner", "rights", "export_control", "engine", "settings_hash", "last_updated",
    ]
    assert set(q.NUMERIC_FIELDS) == {
        "energy_per_atom", "formation_energy_per_atom", "energy_above_hull",
        "volume_per_atom", "nsites", "nelements", "volume", "density",
    }
    assert set(q.SORTABLE) == {*q.NUMERIC_FIELDS, "formula_pretty", "chemsys", "material_id"}
    assert set(q.FIELDS) == {
        "material_id", "campaign", "formula_pretty", "chemsys", "elements", "nelements",
        "nsites", "formula_anonymous", "composition", "composition_reduced", "symmetry",
        "volume", "density", "energy_per_atom", "formation_energy_per_atom",
        "energy_above_hull", "is_stable", "converged", "decomposes_to", "volume_per_atom",
        "method", "tier", "owner", "groups", "rights", "export_control", "derived_access",
        "steps", "updated_at",
    }
    assert set(DERIVED_FIELDS) == {
        "formation_energy_per_atom", "energy_above_hull", "is_stable", "decomposes_to",
    }
    assert SUMMARY.quantities == (
        "energy_per_atom", "formation_energy_per_atom", "energy_above_hull", "volume_per_atom",
    )
    assert SUMMARY.about["energy_per_atom"].unit == "eV/atom"


def test_flatten_writes_sub_columns_and_keeps_lists():
    parts = [{"material_id": "m2", "formula": "Au", "amount": 0.5},
             {"material_id": "m3", "formula": "Cu", "amount": 0.5}]
    row = {
        "material_id": "m1", "symmetry": {"symbol": "Pm-3m", "number": 221},
        "decomposes_to": parts, "method": {"engine": "emt", "settings_hash": "h"},
        "tier": "open", "steps": {"x": {}}, "composition": {"Cu": 1.0, "Au": 1.0},
    }
    flat = flatten(row)
    assert list(flat) == COLUMNS
    assert flat["spacegroup_number"] == 221 and flat["engine"] == "emt"
    assert flat["decomposes_to"] == parts and flat["nsites"] is None
    text = SUMMARY.flatten(row, text=True)  # CSV: JSON text
    assert json.loads(text["decomposes_to"]) == parts
    assert json.loads(text["composition"]) == {"Au": 1.0, "Cu": 1.0}
    nested = SUMMARY.flatten(row, nested=True)  # JSON export: emmet's nesting
    assert nested["symmetry"] == {"symbol": "Pm-3m", "number": 221, "crystal_system": None}
    assert "spacegroup_number" not in nested


class _Extended(Document):
    meta: ClassVar[dict[str, bool]] = {"abstract": True}

    material_id = StringField(about=About("Id.", kind="material", export=True, sort=True))
    energy_per_atom = FloatField(about=About("E.", unit="eV/atom", export=True, range=True))
    density = FloatField(
        about=About("Mass density.", unit="g/cm³", export=True, range=True, derived=True)
    )
    competitors = ListField(StringField(), about=About("Phases.", export=True, derived=True))
    note = StringField()


def test_a_declared_field_gets_its_range_column_and_mask():
    fields = FieldList(_Extended)
    assert fields.columns == ("material_id", "energy_per_atom", "density", "competitors")
    assert fields.ranges == ("energy_per_atom", "density")
    assert fields.sortable == ("energy_per_atom", "density", "material_id")
    assert fields.masked == {"density": None, "competitors": []}
    assert "note" not in fields.projectable  # undeclared: internal
    assert {f["name"]: f["unit"] for f in fields.describe()}["density"] == "g/cm³"


def test_masked_lists_are_fresh_objects():
    row = {"decomposes_to": ["Cu"], "derived_access": [{"tier": "closed", "owner": "x"}]}
    a = mask_derived(row, Caller("anonymous"))
    a["decomposes_to"].append("Au")
    assert mask_derived(row, Caller("anonymous"))["decomposes_to"] == []


def _row(mid: str, tier: str, access_owner: str) -> dict:
    return {
        "material_id": mid, "formula_pretty": "Cu", "chemsys": "Cu", "elements": ["Cu"],
        "nelements": 1, "nsites": 1, "energy_per_atom": -3.5,
        "formation_energy_per_atom": 0.0, "energy_above_hull": 0.0, "is_stable": True,
        "decomposes_to": [], "derived_access": [{"tier": tier, "owner": access_owner}],
        "tier": "open", "owner": "alice",
    }


def test_store_summary_rows_migrate_and_collection():
    from matdx.workflows.context import open_store

    store, _ = open_store()
    store.write_summaries("c1", [_row("m1", "open", "alice"), _row("m2", "closed", "bob")])
    store.write_step_summaries("c1", "s", {"m1": {"energy_above_hull": 0.1}}, {})
    rows = store.summary_rows("c1", ["nsites", "energy_above_hull", "steps"])
    assert [r["material_id"] for r in rows] == ["m1", "m2"]
    assert rows[0] == {"material_id": "m1", "nsites": 1, "energy_above_hull": 0.0,
                       "steps": {"s": {"energy_above_hull": 0.1}}}
    assert not rows[1].get("steps") and "tier" not in rows[1]
    seen = {r["material_id"]: r for r in store.summary_rows("c1", ["energy_above_hull"],
                                                           Caller("anonymous"))}
    assert seen["m1"]["energy_above_hull"] == 0.0
    assert seen["m2"]["energy_above_hull"] is None  # computed from bob's closed record
    with pytest.raises(InputError, match="unknown summary field"):
        store.summary_rows("c1", ["structure"])
    assert store.migrate(dry_run=True) == {}
    assert store.collection("summaries").count_documents({"campaign": "c1"}) == 2
    with pytest.raises(InputError, match="no collection"):
        store.collection("system.users")


def _store_imports() -> dict[str, set[str]]:
    """Modules of matdx.store imported by each, at module level or inside functions."""
    graph: dict[str, set[str]] = {}
    for path in STORE.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matdx.store"):
                parts = node.module.split(".")
                deps.update([parts[2]] if len(parts) > 2 else [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[2] for a in node.names
                            if a.name.startswith("matdx.store."))
        graph[path.stem] = deps - {path.stem}
    return graph


def test_store_modules_import_each_other_without_cycles():
    graph = _store_imports()
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle
    assert order.index("fields") < order.index("documents") < order.index("query")
    assert "export" not in graph["query"] and "repository" not in graph["query"]
