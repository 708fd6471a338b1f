from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from distillery.report import run_report_markdown


def _artifact_key(name: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "dataset"


@task(name="publish-report", cache_policy=NONE)
def publish_report(name: str, output: str, run_id: str, summary: dict, sample: list[dict]) -> None:
    """The run report and a table of sample rows, as artifacts on the flow run."""
    key = _artifact_key(name)
    report = run_report_markdown(name, output, run_id, summary, inline_pictures=True)  # the UI cannot reach files beside the data
    create_markdown_artifact(report, key=f"{key}-report", description=f"Run report for {output}")
    create_table_artifact(sample, key=f"{key}-sample", description=f"Sample rows of {output}")
