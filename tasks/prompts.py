from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from distillery.prompts import render_messages


@task(name="render-prompts", cache_policy=NONE)
def render_prompts(seeds: list[dict], system_prompt: str | None) -> list[dict]:
    return render_messages(seeds, system_prompt)
