"""A real Prefect server on 127.0.0.1 with its own PREFECT_HOME, the deployments
from the root prefect.yaml, a process worker, and `distillery trigger`."""

from __future__ import annotations

import json
import sys
import time

import pytest

import procs

from conftest import ROOT

pytestmark = [pytest.mark.engine, pytest.mark.server]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from distillery.adapters import prefect_api as api

    home = tmp_path_factory.mktemp("prefect-home")
    with procs.prefect_server(home, PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2") as (env, log):
        api.prepare(env)
        worker = api.start_worker(env, log, new_session=True)
        try:
            yield env, home
        finally:
            api.stop(worker)


def trigger(env, *args):
    return procs.run([sys.executable, "-m", "distillery.commands.cli", "trigger", *args], timeout=1200, env=env, cwd=ROOT)


def client(env):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(env["PREFECT_API_URL"])


TRIGGER = ["distill/distill-demo", "--set", "source.limit=4", "--set", "sampling.max_tokens=16",
           "--set", "judge.max_tokens=24", "--idempotency-key", "nightly-2026-11-22"]


@pytest.fixture(scope="module")
def completed(server, tmp_path_factory):
    env, home = server
    out = tmp_path_factory.mktemp("triggered") / "ds"
    first = trigger(env, *TRIGGER, "--set", f"output.uri={out}", "--wait")
    assert first.returncode == 0, (first.stdout, first.stderr[-3000:], (home / "server.log").read_text()[-3000:])
    return first, out


def test_trigger_waits_for_a_completed_run_and_is_idempotent(server, completed):
    env, _ = server
    first, out = completed
    assert "COMPLETED" in first.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["rows_in"] == 4
    assert manifest["summary"]["rows_in"] == manifest["summary"]["kept"] + manifest["summary"]["rejected"]
    assert (out / "report.md").read_text().startswith("# self-instruct-demo: run report")

    again = trigger(env, *TRIGGER, "--set", f"output.uri={out}")
    assert again.returncode == 0
    assert again.stdout.split()[2] == first.stdout.split()[2]  # the same flow run id
    with client(env) as c:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        dep = c.read_deployment_by_name("distill/distill-demo")
        runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
        assert len(runs) == 1
        keys = {a.key for a in c.read_artifacts()}
        types = {a.type for a in c.read_artifacts()}
    assert {"self-instruct-demo-report", "self-instruct-demo-sample"} <= keys
    assert {"markdown", "table", "progress"} <= types


def test_bad_override_is_refused_before_any_run(server):
    env, _ = server
    bad = trigger(env, "distill/distill-demo", "--set", "sampling.temperature=9")
    assert bad.returncode == 2 and "sampling.temperature" in bad.stderr
    missing = trigger(env, "distill/nope")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_kd_deployment_form_is_the_recipe(server):
    env, _ = server
    with client(env) as c:
        dep = c.read_deployment_by_name("score_targets/kd-score-demo")
    recipe = dep.parameter_openapi_schema["definitions"]["Recipe"]["properties"]
    assert "score_targets" in json.dumps(recipe["flow"])
    kd = dep.parameter_openapi_schema["definitions"]["KDConfig"]["properties"]
    assert kd["top_k"]["maximum"] == 20 and "soft targets" in kd["top_k"]["description"]
    assert dep.parameters["recipe"]["kd"] == {"top_k": 20}


def test_schedule_is_inactive_until_turned_on_then_creates_runs(server):
    env, _ = server
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    with client(env) as c:
        dep = c.read_deployment_by_name("preferences/preferences-demo")
        schedules = c.read_deployment_schedules(dep.id)
        assert schedules and all(not s.active for s in schedules)
        only = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
        time.sleep(5)  # two scheduler loops: still nothing for an inactive schedule
        assert c.read_flow_runs(deployment_filter=only, flow_run_filter=scheduled) == []
        c.update_deployment_schedule(dep.id, schedules[0].id, active=True)
        deadline = time.monotonic() + 240  # the scheduler loop runs every 2 s; slower on a busy machine
        runs = []
        while time.monotonic() < deadline and not runs:
            time.sleep(2)
            runs = c.read_flow_runs(deployment_filter=only, flow_run_filter=scheduled)
        assert runs, "an active schedule should get scheduled runs"
        assert all(r.expected_start_time.weekday() == 0 and r.expected_start_time.hour == 4 for r in runs)


def _events(env, name: str) -> list[dict]:
    import httpx

    body = {"filter": {"event": {"name": [name]}}, "limit": 50}
    return httpx.post(f"{env['PREFECT_API_URL']}/events/filter", json=body, timeout=30).raise_for_status().json()["events"]


def _wait(what: str, check, timeout: float = 180):
    deadline = time.monotonic() + timeout  # the event persister and the triggers run in loops; slower on a busy machine
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def test_collapse_monitor_across_runs_of_the_deployment_warns_and_an_automation_acts(server, tmp_path):
    """Runs of distill-demo made the way its schedule makes them (flow runs of the deployment,
    picked up by the worker): a diverse first, a repetitive second. The second warns, and its
    event pauses the deployment through an automation; a third with fail_on_collapse fails
    before publishing anything and leaves the history as it was."""
    from prefect.events.actions import PauseDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    env, home = server
    history = tmp_path / "history" / "demo.jsonl"
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"id": f"s{i}", "instruction": "Write the word hello three times.", "instances": [{"input": ""}]}) + "\n" for i in range(12)))
    common = ["--wait", "--set", "sampling.max_tokens=24", "--set", "judge.enabled=false", "--set", "source.limit=12",
              "--set", f"guards.history_uri={history}"]
    repetitive = ["--set", f"source.uri={same}", "--set", "dedup.enabled=false"]
    with client(env) as c:
        dep = c.read_deployment_by_name("distill/distill-demo")
        automation = c.create_automation(AutomationCore(
            name="pause distill-demo on collapse", actions=[PauseDeployment(source="inferred")],
            trigger=EventTrigger(expect={"distillery.collapse.warning"}, posture=Posture.Reactive, threshold=1,
                                 match={"prefect.resource.id": "distillery.dataset.*"})))
    try:
        first = trigger(env, "distill/distill-demo", *common, "--set", f"output.uri={tmp_path / 'diverse'}")
        assert first.returncode == 0, (first.stdout, first.stderr[-3000:])
        second = trigger(env, "distill/distill-demo", *common, *repetitive, "--set", f"output.uri={tmp_path / 'same'}")
        assert second.returncode == 0, (second.stdout, second.stderr[-3000:])
        runs = [json.loads(line) for line in history.read_text().splitlines()]
        assert len(runs) == 2
        m1, m2 = runs[0]["metrics"], runs[1]["metrics"]
        assert m2["distinct_2"] < m1["distinct_2"] and m2["compression_ratio"] > m1["compression_ratio"]
        collapse = json.loads((tmp_path / "same" / "manifest.json").read_text())["summary"]["collapse"]
        assert collapse["comparison"]["previous_run"] == runs[0]["run_id"] and collapse["comparison"]["warnings"]
        events = _wait("the collapse event", lambda: _events(env, "distillery.collapse.warning"))
        assert events[0]["payload"]["run_id"] == runs[1]["run_id"]
        assert any(r["prefect.resource.role"] == "deployment" for r in events[0]["related"])
        with client(env) as c:  # the automation acted on the event: the deployment (and its schedule) is paused
            _wait("the automation to pause the deployment", lambda: c.read_deployment(dep.id).paused)
            c.resume_deployment(dep.id)
        third = trigger(env, "distill/distill-demo", *common, *repetitive, "--set", "guards.fail_on_collapse=true",
                        "--set", f"output.uri={tmp_path / 'failed'}")
        assert third.returncode != 0 and "collapse monitor" in third.stdout + third.stderr, third.stdout[-3000:]
        assert not (tmp_path / "failed" / "manifest.json").exists() and not (tmp_path / "failed" / "data").exists()
        assert len(history.read_text().splitlines()) == 2
    finally:
        with client(env) as c:
            c.delete_automation(automation)
            c.resume_deployment(dep.id)


# ---- the UI in a real browser (Debian's chromium, headless) ----

SHOTS = ROOT / "out" / "test-screenshots"


def dom_text(dom: str) -> str:
    """A page's text from its rendered DOM: tags stripped, whitespace collapsed (option lists too)."""
    import html
    import re

    text = re.sub(r"<(script|style).*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


def browse(url: str, tmp_path, screenshot: str, expect: list[str], timeout: float = 180) -> str:
    """The page's rendered text once everything in `expect` is on it (the UI renders in pieces,
    slower on a busy machine), and a screenshot of it."""
    from cdp import Browser

    with Browser(tmp_path / f"profile-{screenshot}") as page:
        page.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while missing := [e for e in expect if e not in (text := dom_text(page.js("document.documentElement.outerHTML") or ""))]:
            if time.time() > deadline:
                raise AssertionError(f"{missing} not on {url} within {timeout} s (screenshot: {page.evidence(screenshot)}); "
                                     f"it says: {text[:3000]}")
            time.sleep(0.5)
        page.screenshot(SHOTS / screenshot)
    assert (SHOTS / screenshot).stat().st_size > 10_000
    return text


@pytest.mark.browser
def test_ui_run_form_is_the_recipe(server, tmp_path):
    env, _ = server
    with client(env) as c:
        dep = c.read_deployment_by_name("distill/distill-demo")
    base = env["PREFECT_API_URL"].removesuffix("/api")
    labels = ["Instruction Column", "Max Model Len", "Temperature", "Threshold", "Min Score", "Rows Per Shard"]
    # descriptions and Literal choices come from the pydantic recipe
    page = browse(f"{base}/deployments/deployment/{dep.id}/run", tmp_path, "run-form.png",
                  [*labels, "Sampling temperature; 0 is greedy.", "structured free_text logprob"])
    for label in labels:
        assert label in page, label


@pytest.mark.browser
def test_ui_shows_the_report_and_sample_artifacts(server, completed, tmp_path):
    env, _ = server
    first, _ = completed
    run_id = first.stdout.split()[2]
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client(env) as c:
        arts = {a.type: a for a in c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))}
    base = env["PREFECT_API_URL"].removesuffix("/api")
    browse(f"{base}/artifacts/artifact/{arts['markdown'].id}", tmp_path, "report-artifact.png",
           ["self-instruct-demo: run report", "rows in 4", "engine_start"])
    browse(f"{base}/artifacts/artifact/{arts['table'].id}", tmp_path, "sample-artifact.png",
           ["seed_id teacher prompt response judge_score", "seed_task_0"])
    browse(f"{base}/runs/flow-run/{run_id}", tmp_path, "flow-run.png", ["Completed", "Artifacts"])


def test_self_instruct_deployment_runs_from_trigger(server, completed, tmp_path):
    """The self_instruct deployment through the worker, started the way the UI's Run button
    starts it (a flow run of the deployment with its default recipe plus overrides)."""
    env, home = server
    out = tmp_path / "si"
    run = trigger(env, "self_instruct/self-instruct-demo", "--wait",
                  "--set", "self_instruct.target=2", "--set", "self_instruct.max_rounds=1",
                  "--set", "self_instruct.requests_per_round=2", "--set", "self_instruct.max_tokens=64",
                  "--set", "sampling.max_tokens=16", "--set", "judge.enabled=false", "--set", "source.limit=16",
                  "--set", f"output.uri={out}")
    assert run.returncode == 0 and "COMPLETED" in run.stdout, (run.stdout, run.stderr[-3000:], (home / "server.log").read_text()[-3000:])
    manifest = json.loads((out / "manifest.json").read_text())
    s = manifest["summary"]
    assert s["synthesis"]["rounds"][0]["round"] == 1 and s["rows_in"] == s["kept"] + s["rejected"]
    assert manifest["recipe"]["flow"] == "self_instruct"
    with client(env) as c:
        dep = c.read_deployment_by_name("self_instruct/self-instruct-demo")
    props = dep.parameter_openapi_schema["definitions"]["SelfInstructConfig"]["properties"]
    assert "ROUGE-L" in props["rouge_threshold"]["description"]


@pytest.mark.browser
def test_self_instruct_deployment_runs_from_the_ui_form(server, tmp_path):
    """The UI's own Run page in a real browser: the recipe form is filled in (output, a small
    target, no judge), Submit is clicked, and the worker builds that very recipe."""
    from cdp import Browser
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    env, home = server
    out = tmp_path / "ui-si"
    with client(env) as c:
        dep = c.read_deployment_by_name("self_instruct/self-instruct-demo")

    def runs_of_deployment():
        with client(env) as c:
            return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))

    def ours():
        return [r for r in runs_of_deployment() if r.parameters["recipe"]["output"]["uri"] == str(out)]

    base = env["PREFECT_API_URL"].removesuffix("/api")
    with Browser(tmp_path / "cdp-profile") as page:
        run_page = f"{base}/deployments/deployment/{dep.id}/run"
        # the recipe model's fields and their descriptions (which render after the labels)
        page.open(run_page, "Generate Inputs", "Input Max Tokens", "ROUGE-L")
        fields = [(["Output", "Uri"], str(out)), (["Self Instruct", "Target"], 2),
                  (["Self Instruct", "Max Rounds"], 1), (["Self Instruct", "Requests Per Round"], 2),
                  (["Self Instruct", "Max Tokens"], 64), (["Self Instruct", "Input Max Tokens"], 48),
                  (["Sampling", "Max Tokens"], 16), (["Judge", "Enabled"], False)]
        page.fill_form(fields)  # filled until the (still rendering) form holds every value
        page.screenshot(SHOTS / "self-instruct-run-form.png")
        before = len(runs_of_deployment())
        for _ in range(3):  # a click the page was not ready for creates nothing: click again, never twice for one run
            page.click("Submit")
            if page.left(run_page, timeout=90) or len(runs_of_deployment()) > before:
                break  # on to the deployment page, or at least the run exists
        else:
            pytest.fail(f"three clicks on Submit created no run; the page ends: {page.text()[-2500:]}")

    assert ours(), "Submit created no flow run with the form's recipe"
    deadline = time.time() + 1200  # engine start and a small build, on a busy machine
    while not (runs := ours()) or not runs[0].state.is_final():
        assert time.time() < deadline, f"the UI's run did not finish: {runs and runs[0].state}"
        time.sleep(3)
    assert len(runs) == 1, "one click, one run"
    run = runs[0]
    assert run.state.is_completed(), (run.state, (home / "server.log").read_text()[-3000:])
    recipe = run.parameters["recipe"]
    assert recipe["self_instruct"]["target"] == 2 and recipe["judge"]["enabled"] is False
    assert recipe["sampling"]["max_tokens"] == 16 and recipe["self_instruct"]["input_max_tokens"] == 48

    manifest = json.loads((out / "manifest.json").read_text())
    s = manifest["summary"]
    assert manifest["recipe"]["flow"] == "self_instruct" and manifest["run_id"] == str(run.id)
    assert s["rows_in"] == s["kept"] + s["rejected"] and s["judge_report"] is None
    assert sum(r["kept"] for r in s["synthesis"]["rounds"]) <= 2 and s["synthesis"]["inputs"]["asked"] <= 2
