import numpy as np
import pytest
from datasketch import MinHash

from distillery.dedup import DedupError, DedupParams, Deduplicator, deduplicate_rows, normalize
from distillery.minhash import permutations, shingle_hash, shingles, signatures

P3 = DedupParams(ngram=3)


def rows_from(seed_records, extra=()):
    texts = [r["instruction"] for r in seed_records] + list(extra)
    return [{"id": f"r{i:04d}", "prompt": t, "response": f"answer {i}"} for i, t in enumerate(texts)]


@pytest.mark.parametrize("kind,ngram", [("word", 1), ("word", 3), ("word", 5), ("char", 5)])
def test_signatures_equal_datasketch(seed_records, kind, ngram):
    texts = [r["instruction"] + " " + r["instances"][0]["output"] for r in seed_records]
    texts += ["", "   ", "Ünïcödé café 東京 naïve", "x", "A-B_c d\td\nd", "emoji 😀 and \udcff lone surrogate"]
    a, b = permutations(128, seed=1)
    sigs = signatures(texts, ngram, a, b, kind)
    for text, sig in zip(texts, sigs):
        ref = MinHash(num_perm=128, seed=1, hashfunc=shingle_hash(kind))
        ref.update_batch(shingles(text, ngram, kind))
        assert np.array_equal(ref.hashvalues, sig), text[:40]


def test_permutations_are_datasketchs():
    a, b = permutations(64, seed=7)
    ref = MinHash(num_perm=64, seed=7).permutations
    assert np.array_equal(ref[0], a) and np.array_equal(ref[1], b)


def test_real_seeds_are_not_flagged_as_duplicates(seed_records):
    rows = rows_from(seed_records)
    kept, rejected, _ = deduplicate_rows(rows, "prompt", P3)
    # The 175 human tasks are distinct; a dedup that removes them is broken.
    assert len(kept) == 175 and rejected == []
    assert all(r["dedup_cluster"] == r["id"] for r in kept)


def test_planted_copies_of_real_seeds_are_removed(seed_records):
    originals = [r["instruction"] for r in seed_records[:40]]
    exact = "  " + originals[5].upper() + " "
    near = originals[0] + " Please answer briefly."  # 24 words + 3: Jaccard of 3-grams 22/25
    rows = rows_from(seed_records[:40], [exact, near])
    kept, rejected, _ = deduplicate_rows(rows, "prompt", P3)
    assert len(kept) == 40 and len(rejected) == 2
    by_reason = {r["reason"]: r for r in rejected}
    assert by_reason["exact_duplicate"]["duplicate_of"] == "r0005"
    assert by_reason["near_duplicate"]["duplicate_of"] == "r0000"
    assert by_reason["near_duplicate"]["dedup_cluster"] == "r0000"


def test_representative_is_highest_score_then_smallest_id():
    text = "Write a short poem about the sea, the wind and the gulls over the harbour at dawn"
    rows = [
        {"id": "c", "prompt": text, "response": "x", "judge_score": 4},
        {"id": "b", "prompt": text + " today", "response": "x", "judge_score": 9},
        {"id": "a", "prompt": text, "response": "x", "judge_score": None},
    ]
    kept, rejected, _ = deduplicate_rows(rows, "prompt", P3)
    assert [r["id"] for r in kept] == ["b"]
    assert {r["id"]: r["reason"] for r in rejected} == {"c": "near_duplicate", "a": "near_duplicate"}
    unscored = [{**r, "judge_score": None} for r in rows]
    kept, rejected, _ = deduplicate_rows(unscored, "prompt", P3)
    assert [r["id"] for r in kept] == ["a"]
    assert {r["id"]: r["reason"] for r in rejected} == {"c": "exact_duplicate", "b": "near_duplicate"}


def test_missing_and_empty_fields_are_rejected_with_reason():
    rows = [{"id": "1", "prompt": None, "response": "x"}, {"id": "2", "prompt": "  ", "response": "x"}, {"id": "3", "prompt": "fine text here", "response": "x"}]
    kept, rejected, _ = deduplicate_rows(rows, "prompt", P3)
    assert [r["id"] for r in kept] == ["3"]
    assert {r["id"]: r["reason"] for r in rejected} == {"1": "missing_field", "2": "empty_field"}


def test_field_choice_matters():
    rows = [
        {"id": "a", "prompt": "Write a poem about the sea and the wind", "response": "Waves roll in."},
        {"id": "b", "prompt": "Explain how a transistor amplifies a signal", "response": "Waves roll in."},
    ]
    assert len(deduplicate_rows(rows, "prompt", P3)[0]) == 2
    assert len(deduplicate_rows(rows, "response", P3)[0]) == 1


def test_lone_surrogates_are_replaced_and_counted():
    d = Deduplicator(P3)
    d.add(["a", "b"], ["bad \udcff byte here", "good text"])
    assert d.non_utf8_replaced == 1
    assert d.finish().reason == [None, None]


def test_index_with_other_settings_is_refused():
    with pytest.raises(DedupError, match="num_perm=64 there vs 128 here"):
        DedupParams(num_perm=128).check_index(DedupParams(num_perm=64), "idx/")


def test_normalize():
    assert normalize("  Hello\n\tWORLD ") == "hello world"
    assert shingles("A b, c! d", 3) == [b"a b c", b"b c d"]
    assert shingles("short", 3) == [b"short"]


def test_spilled_signatures_give_the_same_result(seed_records, tmp_path, monkeypatch):
    import distillery.dedup as dedup_module

    monkeypatch.setattr(dedup_module, "_CHUNK", 32)  # 175 seeds + copies: several chunks, and reads of 4 rows
    texts = [r["instruction"] + " " + r["instances"][0]["output"] for r in seed_records]
    texts += [t + " Thanks." for t in texts[:40]] + [t.upper() for t in texts[40:60]]
    ids = [f"r{i:04d}" for i in range(len(texts))]
    results, exports = [], []
    for spill in (None, str(tmp_path)):
        d = Deduplicator(P3, spill=spill)
        for s in range(0, len(texts), 50):
            d.add(ids[s : s + 50], texts[s : s + 50])
        results.append(d.finish())
        exports.append(d.export(list(range(0, len(texts), 7))))
    assert (tmp_path / "signatures.u32").stat().st_size == len(texts) * 128 * 4 and not d._chunks
    assert exports[0][:2] == exports[1][:2] and np.array_equal(exports[0][2], exports[1][2])
    plain, spilled = results
    assert plain.reason == spilled.reason and np.array_equal(plain.representative, spilled.representative)
    assert np.array_equal(plain.similarity, spilled.similarity)
    assert spilled.reason.count("near_duplicate") >= 30 and spilled.reason.count("exact_duplicate") == 20
