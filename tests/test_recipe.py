from pathlib import Path

import pytest
import yaml

from distillery.recipe import Recipe, RecipeError, apply_overrides, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_committed_recipes_are_valid():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        if recipe.flow.startswith("eval_"):  # an evaluation: its own model, checked by loading
            from distillery.recipes.evals import EvalRecipe

            assert isinstance(recipe, EvalRecipe) and recipe.sampling.max_tokens < min(m.max_model_len for m in recipe.models())
            continue
        assert isinstance(recipe, Recipe)
        assert recipe.sampling.max_tokens < recipe.teacher.max_model_len


def test_every_field_has_a_description():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description (it is the UI form's label)"
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                walk(sub, f"{prefix}{name}.")
    walk(Recipe)


def test_overrides_parse_yaml_scalars():
    recipe = load_recipe(ROOT / "recipes/demo.yaml", ["sampling.temperature=0.2", "judge.model=null", "source.limit=5"])
    assert recipe.sampling.temperature == 0.2
    assert recipe.judge.model is None
    assert recipe.source.limit == 5
    # the file's other settings survive an override in the same section
    assert recipe.sampling.max_tokens == yaml.safe_load((ROOT / "recipes/demo.yaml").read_text())["sampling"]["max_tokens"]


def test_unknown_field_names_file_and_field(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("sampling:\n  temprature: 0.3\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value)
    assert "sampling.temprature" in str(err.value)
    assert "unknown field" in str(err.value)


def test_out_of_bounds_value_is_rejected_with_its_bound():
    with pytest.raises(RecipeError) as err:
        load_recipe(None, ["sampling.temperature=7"])
    assert "sampling.temperature" in str(err.value)
    assert "less than or equal to 2" in str(err.value)


def test_max_tokens_must_fit_the_context():
    with pytest.raises(RecipeError, match="max_tokens"):
        load_recipe(None, ["sampling.max_tokens=4096", "teacher.max_model_len=2048"])


def test_bad_override_syntax():
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        apply_overrides({}, ["sampling.temperature"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
