"""The store's encoding of records: nested-array packing and field validation."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import bson
import numpy as np
import pytest
from mongoengine.errors import FieldDoesNotExist, ValidationError
from pymatgen.core import Lattice, Structure

from matdx.store.codec import WRAP, pack, unpack
from matdx.store.documents import CalculationDoc, MaterialDoc, SummaryDoc, document_fields


def _record() -> dict[str, Any]:
    s = Structure(Lattice.cubic(3.6), ["Cu", "Au", "Cu", "Cu"],
                  [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    rng = np.random.default_rng(1)
    return {
        "output": {"structure": s.as_dict(), "forces": rng.normal(size=(4, 3)).tolist(),
                   "stress": rng.normal(size=6).tolist(), "energy": -1.5},
        "settings": {"engine": "emt", "fmax": 0.05, "pair": (1, 2)},
        "deep": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]],
    }


def _has_nested_array(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(_has_nested_array(v) for v in obj.values())
    if isinstance(obj, list):
        return any(isinstance(x, list | tuple) or _has_nested_array(x) for x in obj)
    return False


def test_pack_removes_every_nested_array_and_unpack_restores_it():
    rec = _record()
    before = copy.deepcopy(rec)
    packed = pack(rec)
    assert rec == before  # the input is not modified
    assert not _has_nested_array(packed)
    assert packed["output"]["forces"][0] == {WRAP: rec["output"]["forces"][0]}
    assert packed["settings"]["pair"] == [1, 2]  # tuples become lists
    bson.encode(packed)
    expected = copy.deepcopy(rec)
    expected["settings"]["pair"] = [1, 2]
    expected["output"]["structure"]["lattice"]["pbc"] = list(
        expected["output"]["structure"]["lattice"]["pbc"]
    )
    assert unpack(packed) == expected


def _mongoengine_form(doc_cls: type, data: dict[str, Any]) -> dict[str, Any]:
    doc = doc_cls(**data)
    doc.validate()
    return doc.to_mongo().to_dict()


GOOD = [
    (CalculationDoc, {"id": "c1", "calc_id": "c1", "material_id": "m", "campaign": "c",
                      "engine": "emt", "task": "relax", "settings_hash": "h",
                      "status": "completed", "owner": "o", "groups": ["g"],
                      "settings": {"fmax": 0.05}, "created_at": datetime(2026, 1, 2)}),
    (MaterialDoc, {"id": "m", "material_id": "m", "structure": {"a": 1},
                   "formula_pretty": "Cu", "chemsys": "Cu", "elements": ["Cu"],
                   "nelements": 1, "nsites": 1, "fingerprint": "f", "source": "s",
                   "owner": "o", "symmetry": {"number": 225, "symbol": "Fm-3m"},
                   "created_at": datetime(2026, 1, 2)}),
    (SummaryDoc, {"id": "c:m", "campaign": "c", "material_id": "m", "formula_pretty": "Cu",
                  "chemsys": "Cu", "owner": "o", "energy_per_atom": -3, "nsites": 2,
                  "derived_access": [{"tier": "open"}], "updated_at": datetime(2026, 1, 2),
                  "tier_history": [{"by": "x", "at": datetime(2026, 1, 1), "to_tier": "open"}]}),
]


@pytest.mark.parametrize(("doc_cls", "data"), GOOD)
def test_document_fields_gives_the_documents_own_database_form(doc_cls, data):
    assert bson.encode(document_fields(doc_cls, data)) == bson.encode(
        _mongoengine_form(doc_cls, data)
    )


BASE = dict(GOOD[0][1])
BAD = [
    ({**BASE, "status": "weird"}, ValidationError, "status"),
    ({k: v for k, v in BASE.items() if k != "engine"}, ValidationError, "engine"),
    ({**BASE, "material_id": 5}, ValidationError, "material_id"),
    ({**BASE, "tier": "secret"}, ValidationError, "tier"),
    ({**BASE, "bogus": 1}, FieldDoesNotExist, "bogus"),
]


@pytest.mark.parametrize(("data", "error", "field"), BAD)
def test_document_fields_refuses_what_the_document_refuses(data, error, field):
    with pytest.raises(error, match=field):
        _mongoengine_form(CalculationDoc, data)
    with pytest.raises(error, match=field):
        document_fields(CalculationDoc, data)


def test_embedded_store_file_text_reads_back_as_json_util_writes_it():
    import math
    import uuid

    from bson import Binary, ObjectId, json_util

    from matdx.store.backend import encode_store

    doc = {
        "_id": ObjectId(),
        "created_on": datetime(2026, 12, 7, 0, 30, 1, 123000),
        "blob": Binary(b"\x00\x01chunk"),
        "raw": b"bytes",
        "uuid": Binary.from_uuid(uuid.UUID(int=7)),
        "floats": [1.5, -0.0, 1e-300, float("inf"), float("-inf")],
        "nested": {"a": [[1, 2], [3, {"b": None, "c": True}]], "s": "é\n\""},
        "big": 2**62,
        **_record(),
    }
    data = {"db": {"coll": {"documents": [doc, {"_id": "x", "nan": float("nan")}]}}}
    want = json_util.loads(json_util.dumps(data))
    got = json_util.loads(encode_store(data))
    assert math.isnan(got["db"]["coll"]["documents"][1].pop("nan"))
    assert math.isnan(want["db"]["coll"]["documents"][1].pop("nan"))
    assert got == want
    for key in ("_id", "created_on", "blob", "raw", "uuid"):
        assert type(got["db"]["coll"]["documents"][0][key]) is type(
            want["db"]["coll"]["documents"][0][key]
        )
