"""Reading and extending a dedup index in a local folder or on S3 (fsspec)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import numpy as np

from distillery.adapters.storage import StorageError, open_dataset
from distillery.dedup import DedupParams, Deduplicator
from distillery.dedup_index import META, add_part, check_meta, decode_part, encode_part, new_meta, part_name


def load_into(dedup: Deduplicator, uri: str, **options) -> int:
    """Add an index's rows to a deduplicator; returns how many (0 if no index yet)."""
    ds = open_dataset(uri, **options)
    if not ds.exists(META):
        return 0
    meta = json.loads(ds.read(META))
    check_meta(meta, dedup.params, uri)
    for part in meta["parts"]:
        data = ds.read(part["path"])
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise StorageError(f"dedup index {uri}: {part['path']} does not match its checksum; restore it or rebuild the index")
        ids, keys, sigs = decode_part(data, dedup.params.num_perm)
        dedup.add_index(ids, keys, sigs)
    return meta["rows"]


def append(uri: str, params: DedupParams, ids: list[str], keys: list[bytes], sigs: np.ndarray, **options) -> dict:
    """Write one more part, then the updated index.json (last, so readers never see a partial part)."""
    ds = open_dataset(uri, **options)
    if ds.exists(META):
        meta = json.loads(ds.read(META))
        check_meta(meta, params, uri)
    else:
        meta = new_meta(params, importlib.metadata.version("datasketch"))
    if not ids:
        return meta
    data = encode_part(ids, keys, sigs)
    path = part_name(meta)
    ds.write(path, data)
    meta = add_part(meta, path, len(ids), data)
    ds.write(META, json.dumps(meta, indent=2).encode())
    return meta


def fingerprint(uri: str, **options) -> str:
    """What the index holds now (its index.json's sha256; empty if none): a build that
    deduped against another state of the index is redone."""
    ds = open_dataset(uri, **options)
    return hashlib.sha256(ds.read(META)).hexdigest() if ds.exists(META) else ""
