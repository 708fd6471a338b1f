"""The pull step of every deployment in prefect.yaml.

A process worker starts each flow run in a temporary folder. `enter_project` moves the
flow-run process into the Distillery project folder, so the deployment's entrypoint
(`flows/distill.py`) and the recipes' relative paths (`data/...`, `out/...`) resolve:
`$DISTILLERY_HOME` when it is set, else the checkout the installed package lives in
(an editable install, `make install`). Prefect calls the step with the YAML's keyword
arguments (none here) and changes into the `directory` it returns.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from distillery.errors import DistilleryError

HOME_VAR = "DISTILLERY_HOME"
PACKAGE_CHECKOUT = Path(__file__).resolve().parents[2]
HOW_TO_SET = "DISTILLERY_HOME=/path/to/distillery prefect worker start --pool distillery-process"

log = logging.getLogger(__name__)


class ProjectNotFound(DistilleryError, FileNotFoundError):
    """The worker's machine has no Distillery project folder where the step looked."""


def _problem(home: Path) -> str | None:
    """What keeps `home` from being the project folder, or None when it is one."""
    import yaml

    if not home.is_dir():
        return "is not a folder on this worker's machine"
    spec = home / "prefect.yaml"
    if not spec.is_file():
        return "holds no prefect.yaml"
    try:
        deployments = (yaml.safe_load(spec.read_text()) or {}).get("deployments") or []
    except (yaml.YAMLError, AttributeError) as exc:
        return f"holds a prefect.yaml that does not parse ({exc})"
    paths = sorted({d["entrypoint"].split(":")[0] for d in deployments if d.get("entrypoint")})
    absent = [p for p in paths if not (home / p).is_file()]
    if not paths or absent:
        return f"lacks the flow entrypoints {', '.join(absent) or '(prefect.yaml declares none)'}"
    return None


def project_home(environ: dict | None = None) -> Path:
    """The checked project folder: $DISTILLERY_HOME when set, else the package's checkout."""
    value = (os.environ if environ is None else environ).get(HOME_VAR, "").strip()
    home = Path(value).expanduser() if value else PACKAGE_CHECKOUT
    problem = _problem(home)
    if problem is None:
        return home.resolve()
    if value:
        raise ProjectNotFound(
            f"{HOME_VAR}={value} {problem}. Flow runs start in {HOME_VAR}, which must be the Distillery "
            f"checkout (the folder with prefect.yaml and flows/) on the worker's machine: start the worker "
            f"with it set there, e.g. `{HOW_TO_SET}`, or unset it to use the checkout the installed "
            f"distillery package comes from.")
    raise ProjectNotFound(
        f"{HOME_VAR} is not set and {home}, where the installed distillery package lives, {problem} "
        f"(a non-editable install has no project folder). Set {HOME_VAR} to the Distillery checkout on "
        f"the worker's machine when starting the worker, e.g. `{HOW_TO_SET}`.")


def _fail_flow_run(message: str) -> None:
    """Put the message on the run's state: the UI and `prefect flow-run inspect` show it there
    (the worker would report only "exited with non-zero status code"). Best effort: the run's
    logs carry the message anyway, through the flow-run logger that runs the pull steps."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Failed(message=message))
    except Exception as exc:  # reporting must not hide the real error
        log.warning("could not mark flow run %s failed: %s", run_id, exc)


def enter_project() -> dict:
    """Prefect pull step: change into the project folder; `directory` comes back for Prefect."""
    try:
        home = project_home()
    except ProjectNotFound as exc:
        _fail_flow_run(str(exc))
        raise
    os.chdir(home)
    return {"directory": str(home)}


__all__ = ["HOME_VAR", "ProjectNotFound", "enter_project", "project_home"]
