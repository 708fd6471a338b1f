"""The map / shuffle / reduce dedup gives exactly what `find_duplicates` gives."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_seeds
from distillery.dedup import DedupParams, Deduplicator
from distillery.dedup_shuffle import bands, map_bands, map_exact, reduce_bands, reduce_exact, shuffle_dedup
from distillery.stages.dedup import Signatures, drops_digest, find_duplicates, signature_matrix, signature_schema

PARAMS = DedupParams()  # 128 permutations, threshold 0.8, word 5-grams


def seed_text(seed: dict) -> str:
    parts = [seed["instruction"], *(f"{i['input']}\n{i['output']}" for i in seed["instances"])]
    return "\n".join(parts)


def one_word_changed(text: str, at: int, word: str = "zebra") -> str:
    words = text.split()
    words[at % len(words)] = word
    return " ".join(words)


def build_rows() -> list[dict]:
    """The seeds plus every kind of duplicate the dedup has a rule for."""
    texts = [seed_text(s) for s in read_seeds()]
    long_ones = sorted(range(len(texts)), key=lambda k: -len(texts[k].split()))
    rows = [{"id": f"seed-{k}", "prompt": t, "judge_score": float(k % 5) if k % 3 else None} for k, t in enumerate(texts)]
    extra = []
    for k in range(0, 175, 9):  # exact duplicates: case and whitespace variants, some scored higher
        extra.append({"id": f"exact-{k}", "prompt": "  " + texts[k].upper().replace(" ", "\t "), "judge_score": 9.0 if k % 2 else None})
    for n, k in enumerate(long_ones[1:25]):  # near duplicates: one word changed
        extra.append({"id": f"near-{k}", "prompt": one_word_changed(texts[k], 7 * n + 3), "judge_score": float(n % 4)})
    big = " ".join(texts[k] for k in long_ones[:6])  # one text, 30 near copies: a bucket over 16
    extra += [{"id": "big", "prompt": big, "judge_score": 1.0}]
    extra += [{"id": f"big-{n}", "prompt": one_word_changed(big, 11 * n + 5, f"w{n}"), "judge_score": float(n % 3)} for n in range(30)]
    extra += [{"id": "tie", "prompt": texts[long_ones[30]], "judge_score": 2.0} for _ in range(3)]  # same id, same score
    extra += [{"id": "tie", "prompt": texts[long_ones[30]].lower(), "judge_score": 2.0}]
    extra += [{"id": "missing"}, {"id": "none", "prompt": None}, {"id": "empty", "prompt": " \n "}, {"id": "empty2", "prompt": ""}]
    mixed = []
    for k, row in enumerate(rows):  # interleave, so duplicates fall before and after their originals
        mixed.append(row)
        mixed += extra[k::len(rows)]
    return mixed + [extra[-5], rows[3]]


def shard_tables(rows: list[dict], sizes: list[int], params: DedupParams = PARAMS) -> list[pa.Table]:
    assert sum(sizes) == len(rows)
    bounds = np.cumsum([0, *sizes]).tolist()
    stage = Signatures("prompt", params)
    return [stage.run(rows[a:b], shard).rows for shard, (a, b) in enumerate(zip(bounds, bounds[1:]))]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return build_rows()


@pytest.fixture(scope="module")
def tables(rows) -> list[pa.Table]:
    rest = len(rows) - 37 - 60 - 1 - 90
    return shard_tables(rows, [0, 37, 0, 60, 1, 90, rest, 0])


@pytest.fixture(scope="module")
def expected(tables):
    return find_duplicates(tables, PARAMS, "prompt")


def test_the_test_data_has_every_case(expected):
    drops, counts = expected
    reasons = {d["reason"] for d in drops}
    assert reasons == {"exact_duplicate", "near_duplicate", "missing_field", "empty_field"}
    assert any(d["id"].startswith("seed-") and d["reason"] == "exact_duplicate" for d in drops)  # a later copy scored higher
    assert sum(d["id"].startswith("big") for d in drops) == 30 and counts["clusters"] > 20


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_shuffled_dedup_equals_find_duplicates(tables, expected, partitions):
    drops, counts = shuffle_dedup(tables, PARAMS, "prompt", partitions=partitions)
    assert drops == expected[0]
    assert counts == expected[1]
    assert drops_digest(drops) == drops_digest(expected[0])


def test_other_settings_and_shardings_agree(rows):
    params = DedupParams(num_perm=64, threshold=0.7, ngram=3, seed=7)
    for sizes in ([len(rows)], [5] * (len(rows) // 5) + [len(rows) % 5]):
        tables = shard_tables(rows, sizes, params)
        assert shuffle_dedup(tables, params, "prompt", partitions=5) == find_duplicates(tables, params, "prompt")


def test_nothing_duplicated_and_nothing_at_all():
    unique = [{"id": f"s{k}", "prompt": seed_text(s), "judge_score": 1.0} for k, s in enumerate(read_seeds())]
    tables = shard_tables(unique, [100, 0, 75])
    drops, counts = find_duplicates(tables, PARAMS, "prompt")
    assert drops == [] and counts == {"rows": 175, "dropped": 0, "clusters": 0}
    assert shuffle_dedup(tables, PARAMS, "prompt", partitions=3) == (drops, counts)
    empty = shard_tables([], [0, 0])
    assert shuffle_dedup(empty, PARAMS, "prompt") == find_duplicates(empty, PARAMS, "prompt")
    assert shuffle_dedup([], PARAMS, "prompt") == find_duplicates([], PARAMS, "prompt")


def buckets(pairs) -> set[frozenset]:
    """The rows grouped by their bucket key: the partition, whatever hash made the keys."""
    groups: dict = {}
    for key, row in pairs:
        groups.setdefault(key, set()).add(row)
    return {frozenset(g) for g in groups.values()}


def test_bands_make_the_local_lsh_buckets(tables):
    dedup = Deduplicator(PARAMS)
    for t in tables:
        dedup.add_prepared(t.column("id").to_pylist(), t.column("exact_key").to_pylist(), signature_matrix(t, PARAMS.num_perm),
                           t.column("invalid").to_pylist(), t.column("score").to_pylist())
    assert bands(PARAMS) == [(i * dedup.band_rows, (i + 1) * dedup.band_rows) for i in range(dedup.bands)]
    roots = dedup.exact_roots()
    rows, keys = dedup.lsh_rows(roots)
    assert max(np.unique(keys[:, band], return_counts=True)[1].max() for band in range(dedup.bands)) > 16
    starts = np.cumsum([0, *(len(t) for t in tables)]).tolist()
    keyed = [map_exact(t, s, 3)[0] for t, s in zip(tables, starts)]
    exact = np.concatenate([reduce_exact([shard[p] for shard in keyed]) for p in range(3)])
    copies = np.flatnonzero(roots != np.arange(len(roots)))
    assert sorted(map(tuple, exact.tolist())) == list(zip(copies.tolist(), roots[copies].tolist()))  # the first occurrence wins
    not_fresh = exact[:, 0]
    parts = [map_bands(t, s, 3, PARAMS, not_fresh) for t, s in zip(tables, starts)]
    entries = pa.concat_tables([p for shard in parts for p in shard]).to_pylist()
    for band in range(dedup.bands):  # the same keys, so the same buckets holding the same rows
        mine = [(int.from_bytes(e["key"], "little"), e["position"]) for e in entries if e["band"] == band]
        assert sorted(mine) == sorted(zip(keys[:, band].tolist(), rows.tolist()))
        assert buckets(mine) == buckets(zip(keys[:, band].tolist(), rows.tolist()))
    pairs = np.unique(np.concatenate([reduce_bands([shard[p] for shard in parts]) for p in range(3)]), axis=0)
    assert np.array_equal(pairs, dedup.candidates(roots))


def test_map_outputs_are_small_picklable_tables(tables):
    parts, invalid = map_exact(tables[-2], sum(len(t) for t in tables[:-2]), 4)
    assert len(parts) == 4 and sum(len(p) for p in parts) + len(invalid) == len(tables[-2])
    assert pickle.loads(pickle.dumps((parts, invalid))) == (parts, invalid)


def test_rows_that_rank_equal_go_where_the_local_dedup_sends_them():
    # Same text, id and score at positions 5 and 1027: both dedups keep the first in the build.
    twin = {"id": "twin", "prompt": seed_text(read_seeds()[0]), "judge_score": 1.0}
    rows = [{"id": f"e{k}", "prompt": ""} for k in range(1028)]
    rows[5] = rows[1027] = twin
    tables = shard_tables(rows, [500, 528])
    expected = find_duplicates(tables, PARAMS, "prompt")
    assert [(d["shard"], d["offset"]) for d in expected[0] if d["id"] == "twin"] == [(1, 527)]
    for partitions in (1, 3):
        assert shuffle_dedup(tables, PARAMS, "prompt", partitions=partitions) == expected


def test_a_pair_at_exactly_the_threshold_is_near():
    # Signatures made by hand: copies of a that differ only past the first band (so all
    # share its bucket) in 32 (b) or 33 (c) of 128 places, at threshold 1 - 32/128. c is
    # too far from a but joins it through b, so its similarity is estimated afresh.
    params = DedupParams(threshold=0.75)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=128, dtype=np.uint32)
    sigs = [base.copy() for _ in range(3)]
    sigs[1][-32:] += 1
    sigs[2][-33:] += 1
    table = pa.table({"id": ["a", "b", "c"], "exact_key": [rng.bytes(16) for _ in range(3)],
                      "signature": [s.tolist() for s in sigs], "invalid": [None] * 3, "score": [None] * 3},
                     schema=signature_schema(128))
    expected = find_duplicates([table], params, "prompt")
    assert [(d["id"], d["detail"]) for d in expected[0]] == [("b", "prompt ~0.75 Jaccard with a"), ("c", "prompt ~0.74 Jaccard with a")]
    assert shuffle_dedup([table], params, "prompt", partitions=2) == expected
