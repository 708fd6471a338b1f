"""The `distill_loop` flow: build, fine-tune, evaluate, from one deployment.

1. the distillation build (`build`, a distill recipe), published as usual;
2. `distillery finetune` of the student on it (TRL's SFT, `finetune.steps` steps), saved to
   `finetune.output`;
3. the evaluation (`eval`: identity, pairwise, rse or accuracy) with two candidates, the student
   before and after fine-tuning, `before` set, so the report gives the change.

Sized for CPU with the default model (a few dozen steps); the same flow drives a real student on
a GPU machine, where TRL trains on the GPU and vLLM serves both students.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from distillery.recipes.evals import EvalRecipe, FinetuneSection, LoopRecipe


@task(name="finetune", cache_policy=NONE)
def finetune_task(dataset: str, model: str, section: FinetuneSection) -> dict:
    from distillery.adapters.engine import close_engines
    from distillery.commands.finetune import FinetuneConfig, finetune

    close_engines()  # the trainer gets the machine's memory and cores
    return finetune(FinetuneConfig(dataset=dataset, model=model, output=section.output, steps=section.steps,
                                   learning_rate=section.learning_rate, batch_size=section.batch_size, max_length=section.max_length))


@flow(name="distill_loop", log_prints=True, validate_parameters=True)
def distill_loop(recipe: LoopRecipe) -> dict:
    """Build with the teacher, fine-tune the student on the build, evaluate the student before and after."""
    from distillery.recipe import flow_for

    logger = get_run_logger()
    built = flow_for(recipe.build)(recipe.build)
    trained = finetune_task(recipe.build.output.uri, recipe.student.model, recipe.finetune)
    logger.info("fine-tuned %s: %d steps, loss %s -> %s", recipe.student.model, trained["steps"], trained["first_loss"], trained["last_loss"])
    after = recipe.student.model_copy(update={"name": f"{recipe.student.name}-tuned", "model": recipe.finetune.output, "endpoint": None})
    ev = recipe.eval.model_copy(update={"candidates": [recipe.student, after], "before": recipe.student.name})
    ev = EvalRecipe.model_validate(ev.model_dump())  # the replaced candidates checked like any recipe's
    evaluated = flow_for(ev)(ev)
    return {"output": ev.output.uri, "run_id": evaluated["run_id"], "report": evaluated["report"],
            "summary": {"build": built["summary"], "finetune": trained, "eval": evaluated["summary"]}}
