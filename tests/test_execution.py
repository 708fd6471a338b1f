"""The execution section (where a build runs) and the create-only shard commit that makes
at-least-once executors (Ray retries, a retried task run) exactly-once. No Ray here."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import SEEDS
from distillery.adapters.storage import open_dataset
from distillery.execution import ExecutionConfig
from distillery.recipe import RecipeError, load_recipe
from distillery.stages.contract import record_name
from distillery.stages.executor import finished, run_shard, stage_source
from distillery.stages.prompts import SEED_SCHEMA, Render

ROOT = "_temporary/t"


def test_one_switch_moves_a_build_to_ray_and_changes_nothing_it_builds(tmp_path):
    from distillery.report import build_key

    local = load_recipe(None, [f"source.uri={SEEDS}"])
    ray = load_recipe(None, [f"source.uri={SEEDS}", "execution.backend=ray", "execution.engines=4"])
    assert (ray.execution.backend, ray.execution.engines) == ("ray", 4)
    assert local.model_dump(exclude={"execution"}) == ray.model_dump(exclude={"execution"})
    # open_build keys a build by the recipe without `execution`: the same build either way
    assert build_key(local.model_dump(mode="json", exclude={"execution"}), "d") == \
        build_key(ray.model_dump(mode="json", exclude={"execution"}), "d")


@pytest.mark.parametrize("override, field", [("execution.backend=spark", "execution.backend"),
                                             ("execution.engines=0", "execution.engines"),
                                             ("execution.inflight_batches=0", "execution.inflight_batches"),
                                             ("execution.ray_adress=auto", "execution.ray_adress")])
def test_bad_execution_settings_name_the_field(override, field):
    with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
        load_recipe(None, [override])


@pytest.mark.parametrize("engines, gpus, nodes, tp, expected", [
    ("auto", 8, 2, 1, 8), ("auto", 8, 2, 2, 4), ("auto", 0, 3, 1, 3), ("auto", 1, 1, 2, 1), (3, 8, 2, 1, 3)])
def test_engine_count(engines, gpus, nodes, tp, expected):
    assert ExecutionConfig(engines=engines).engine_count(gpus, nodes, tp) == expected


def _seed_shard(store, rows: int = 6) -> list:
    seeds = [json.loads(line) for line in SEEDS.read_text().splitlines()[:rows]]
    shard = [{"seed_id": s["id"], "instruction": s["instruction"], "input": s["instances"][0]["input"]} for s in seeds]
    records, _ = stage_source(store, ROOT, "load", "k", [(shard, [], len(shard))], SEED_SCHEMA)
    return [records[0].files[0]]


def test_two_tries_of_one_shard_commit_once_and_both_see_the_winner(tmp_path):
    """Two attempts of the same shard at once (a retry racing the first try): each writes its
    own files, one record is created, and the loser returns the winner's record and removes
    its own files."""
    store = open_dataset(str(tmp_path))
    inputs = _seed_shard(store)
    stage, results, gate = Render(None), {}, threading.Barrier(2)

    class Slow(type(stage)):  # both tries finish rendering before either commits
        def run(self, rows, shard):
            out = super().run(rows, shard)
            gate.wait(timeout=30)
            return out

    def attempt(name: str) -> None:
        results[name] = run_shard(store, ROOT, Slow(None), 0, inputs, (), attempt=name)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in ("a1", "b2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    (ra, _), (rb, _) = results["a1"], results["b2"]
    assert ra == rb, "both tries must report the one committed record"
    committed = json.loads((tmp_path / ROOT / "render" / record_name(0)).read_text())
    winner = committed["files"][0]["path"].split(".")[-2]
    assert winner in ("a1", "b2")
    left = sorted(p.name for p in (tmp_path / ROOT / "render").iterdir())
    assert left == sorted([record_name(0), f"part-00000.{winner}.parquet", f"rejected-00000.{winner}.parquet"])
    assert finished(store, f"{ROOT}/render", 0, ra.key) == ra


def test_a_try_replaces_the_record_of_an_earlier_setting(tmp_path):
    store = open_dataset(str(tmp_path))
    inputs = _seed_shard(store)
    old, ran_old = run_shard(store, ROOT, Render(None), 0, inputs, (), attempt="t1")
    new, ran_new = run_shard(store, ROOT, Render("Be brief."), 0, inputs, (), attempt="t2")
    assert ran_old and ran_new and old.key != new.key
    assert finished(store, f"{ROOT}/render", 0, new.key) == new
    again, ran = run_shard(store, ROOT, Render("Be brief."), 0, inputs, (), attempt="t3")
    assert (again, ran) == (new, False)  # finished: nothing rewritten
