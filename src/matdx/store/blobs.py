"""Large arrays (trajectories, phonon band structures) in GridFS, not in documents.

A document keeps only the returned file id; the array is stored as a ``.npy`` byte stream
(no pickling) with its metadata, readable back exactly.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from matdx.store.documents import CampaignDoc

BUCKET = "matdx_blobs"


def _fs() -> Any:
    import gridfs

    return gridfs.GridFS(CampaignDoc._get_db(), collection=BUCKET)


def put_array(name: str, array: np.ndarray, **metadata: Any) -> str:
    """Store ``array``; return its file id (a string to keep in a document)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    file_id = _fs().put(
        buf.getvalue(),
        filename=name,
        metadata={
            "shape": list(np.shape(array)),
            "dtype": str(np.asarray(array).dtype),
            **metadata,
        },
    )
    return str(file_id)


def get_array(file_id: str) -> np.ndarray:
    """Read back an array stored with :func:`put_array`."""
    from bson import ObjectId

    data = _fs().get(ObjectId(file_id)).read()
    return np.load(io.BytesIO(data), allow_pickle=False)
