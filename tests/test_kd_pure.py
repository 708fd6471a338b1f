"""Soft-target bookkeeping without an engine: top-K extraction, multi-teacher mixtures,
float16 rounding, and the columns' on-disk form."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillery.kd import KDError, kd_fields, merge, round_logprobs, targets


def test_targets_take_the_top_k_by_rank_and_the_sampled_token():
    # position 0: the sampled token 7 is rank 1; position 1: it is rank 4, outside the top 2
    dists = [{7: (-0.1, 1), 3: (-2.5, 2), 9: (-3.0, 3)}, {5: (-0.5, 1), 2: (-1.2, 2), 8: (-4.0, 4)}]
    out = targets([7, 8], dists, k=2)
    assert out["kd_topk_ids"] == [[7, 3], [5, 2]]
    assert out["kd_topk_logprobs"] == [[-0.1, -2.5], [-0.5, -1.2]]
    assert out["kd_token_logprobs"] == [-0.1, -4.0]
    with pytest.raises(KDError, match="token 4 has no logprob"):
        targets([7, 4], dists, k=2)
    with pytest.raises(KDError, match="2 tokens but 1"):
        targets([7, 8], dists[:1], k=2)


def test_merge_is_the_weighted_mixture_renormalized_over_the_union():
    a = {"kd_token_ids": [1], "kd_token_logprobs": [math.log(0.6)], "kd_topk_ids": [[1, 2]], "kd_topk_logprobs": [[math.log(0.6), math.log(0.3)]]}
    b = {"kd_token_ids": [1], "kd_token_logprobs": [math.log(0.2)], "kd_topk_ids": [[3, 1]], "kd_topk_logprobs": [[math.log(0.7), math.log(0.2)]]}
    m = merge([a, b], [3.0, 1.0])
    raw = {1: 0.75 * 0.6 + 0.25 * 0.2, 2: 0.75 * 0.3, 3: 0.25 * 0.7}
    z = sum(raw.values())
    assert m["kd_topk_ids"] == [[1, 2, 3]]
    assert m["kd_topk_logprobs"][0] == pytest.approx([math.log(raw[i] / z) for i in (1, 2, 3)])
    assert m["kd_token_logprobs"][0] == pytest.approx(math.log(raw[1] / z))
    assert sum(math.exp(x) for x in m["kd_topk_logprobs"][0]) == pytest.approx(1.0)
    with pytest.raises(KDError, match="different tokens"):
        merge([a, {**b, "kd_token_ids": [2]}], [1, 1])


def test_rounding_keeps_bf16_precision_and_passes_infinities():
    values = [-0.0123, -1.5, -7.77, -13.2, -float("inf")]
    schema = pa.schema(kd_fields("float16"))
    table = pa.table({"kd_token_ids": [[1, 2, 3, 4, 5]], "kd_token_logprobs": [values], "kd_topk_ids": [[[1], [2]]],
                      "kd_topk_logprobs": [[[-0.5], [-9.99]]]}, schema=schema)
    rounded = round_logprobs(table, 7)
    got = rounded.column("kd_token_logprobs").to_pylist()[0]
    for v, g in zip(values, got):
        if math.isinf(v):
            assert math.isinf(g) and g < 0
        else:
            assert abs(g - v) <= abs(v) * 2 ** -8 + 1e-3  # bf16-sized error, plus float16's own
    bits = np.asarray(got[:4], dtype=np.float16).view(np.uint16)
    assert not (bits & 0b111).any()  # the three low mantissa bits are gone
    assert round_logprobs(table, 10).equals(table)
    assert rounded.schema.equals(schema)


def test_columns_read_back_with_plain_pyarrow_and_keep_their_types():
    from datetime import datetime, timezone

    from distillery.kd import with_kd
    from distillery.schema import ROW_SCHEMA, to_table
    from distillery.shards import ShardSpec, encode_shards

    row = {"id": "x", "messages": [], "prompt": "p", "response": "r", "seed_id": "s", "sample_index": 0, "teacher": "t",
           "teacher_model": "m", "sampling": "{}", "run_id": "r", "created_at": datetime.now(timezone.utc),
           "kd_token_ids": [5, 6], "kd_token_logprobs": [-0.25, -1.0], "kd_topk_ids": [[5, 1], [6, 2]], "kd_topk_logprobs": [[-0.25, -2.0], [-1.0, -1.5]]}
    shard, data = encode_shards(to_table([row], with_kd(ROW_SCHEMA)), "data", "train", ShardSpec())[0]
    back = pq.read_table(io.BytesIO(data)).to_pylist()[0]
    assert back["kd_topk_ids"] == [[5, 1], [6, 2]] and back["kd_topk_logprobs"] == [[-0.25, -2.0], [-1.0, -1.5]]
    meta = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["kd_topk_logprobs.list.element.list.element"]
    assert set(shard.entry()["column_bytes"]) == {"kd_token_ids", "kd_token_logprobs", "kd_topk_ids", "kd_topk_logprobs"}
