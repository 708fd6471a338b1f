from datasketch import MinHash

from distillery.dedup import deduplicate, minhash, normalize, shingles
from distillery.schema import content_id


def rows_from(seed_records, extra=()):
    texts = [r["instruction"] for r in seed_records] + list(extra)
    return [{"id": content_id(t, i), "prompt": t, "response": f"answer {i}"} for i, t in enumerate(texts)]


def test_real_seeds_are_not_flagged_as_duplicates(seed_records):
    rows = rows_from(seed_records)
    kept, rejected = deduplicate(rows, "prompt", 3, 128, 0.8)
    # The 175 human tasks are distinct; a dedup that removes them is broken.
    assert len(kept) + len(rejected) == 175
    assert len(rejected) == 0
    assert all(r["dedup_cluster"] == r["id"] for r in kept)


def test_planted_duplicates_are_removed_and_point_at_the_original(seed_records):
    original = seed_records[0]["instruction"]
    exact = "  " + original.upper() + " "
    near = original + " Please answer briefly."
    rows = rows_from(seed_records[:30], [exact, near])
    kept, rejected = deduplicate(rows, "prompt", 3, 128, 0.8)
    assert len(kept) == 30 and len(rejected) == 2
    by_reason = {r["reason"]: r for r in rejected}
    assert by_reason["exact_duplicate"]["prompt"] == exact
    assert by_reason["near_duplicate"]["prompt"] == near
    assert {r["dedup_cluster"] for r in rejected} == {rows[0]["id"]}


def test_field_choice_matters():
    rows = [
        {"id": "a", "prompt": "Write a poem about the sea and the wind", "response": "Waves roll."},
        {"id": "b", "prompt": "Explain how a transistor amplifies a signal", "response": "Waves roll."},
    ]
    assert len(deduplicate(rows, "prompt", 3, 128, 0.8)[0]) == 2
    assert len(deduplicate(rows, "response", 3, 128, 0.8)[0]) == 1


def test_normalize_and_shingles():
    assert normalize("  Hello\n\tWORLD ") == "hello world"
    assert shingles("a b c d", 3) == {b"a b c", b"b c d"}
    assert shingles("short", 3) == {b"short"}


def test_lean_minhash_matches_datasketch():
    text = "the quick brown fox jumps over the lazy dog"
    ref = MinHash(num_perm=64, seed=1)
    ref.update_batch(list(shingles(text, 3)))
    assert (minhash(text, 3, 64).hashvalues == ref.hashvalues).all()
