"""The deployments' pull step, without a server: which folder it picks and what it says."""

from __future__ import annotations

import os

import pytest

from conftest import ROOT
from distillery.adapters.deploy_steps import HOME_VAR, ProjectNotFound, enter_project, project_home


def test_without_the_variable_the_packages_checkout_is_the_project():
    assert project_home({}) == ROOT.resolve()
    assert project_home({HOME_VAR: "  "}) == ROOT.resolve()


def test_the_variable_wins_when_it_points_at_a_checkout(tmp_path):
    assert project_home({HOME_VAR: str(ROOT)}) == ROOT.resolve()


@pytest.mark.parametrize("layout, says", [
    (None, "is not a folder"),
    ({}, "holds no prefect.yaml"),
    ({"prefect.yaml": "deployments:\n  - {name: d, entrypoint: flows/distill.py:distill}\n"}, "lacks the flow entrypoints flows/distill.py"),
])
def test_a_folder_that_is_no_checkout_is_refused_with_the_fix(tmp_path, layout, says):
    home = tmp_path / "home"
    if layout is not None:
        home.mkdir()
        for name, text in layout.items():
            (home / name).write_text(text)
    with pytest.raises(ProjectNotFound) as err:
        project_home({HOME_VAR: str(home)})
    message = str(err.value)
    assert says in message and f"{HOME_VAR}={home}" in message
    assert "DISTILLERY_HOME=/path/to/distillery prefect worker start --pool distillery-process" in message


def test_the_step_enters_the_project_and_returns_it_for_prefect(tmp_path, monkeypatch):
    monkeypatch.delenv(HOME_VAR, raising=False)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert enter_project() == {"directory": str(ROOT.resolve())}
    assert os.getcwd() == str(ROOT.resolve())


def test_a_non_editable_install_without_the_variable_is_told_to_set_it(tmp_path, monkeypatch):
    from distillery.adapters import deploy_steps

    monkeypatch.setattr(deploy_steps, "PACKAGE_CHECKOUT", tmp_path)  # site-packages: no prefect.yaml there
    with pytest.raises(ProjectNotFound) as err:
        project_home({})
    assert str(err.value).startswith(f"{HOME_VAR} is not set and {tmp_path}") and "prefect worker start" in str(err.value)
