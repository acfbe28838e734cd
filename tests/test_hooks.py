"""The hooks as plain Python: rendered the way cookiecutter renders them, then called."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from cookiecutter.environment import StrictEnvironment
from cookiecutter.exceptions import FailedHookException

from .conftest import COMBINATIONS, TEMPLATE, bake

ANSWERS = {
    "project_name": "My Project",
    "project_slug": "my-project",
    "package_name": "my_project",
    "task": "image_classification",
    "network": "auto",
    "email": "you@example.com",
    "include_ci": "yes",
}


def load_hook(name: str, **answers: str) -> types.ModuleType:
    source = (TEMPLATE / "hooks" / f"{name}.py").read_text()
    rendered = StrictEnvironment().from_string(source).render(cookiecutter={**ANSWERS, **answers})
    module = types.ModuleType(name)
    exec(compile(rendered, name, "exec"), module.__dict__)
    return module


@pytest.mark.parametrize(
    "package, reason",
    [
        ("my-project", "not a lower-case ASCII Python identifier"),
        ("3d_vision", "not a lower-case ASCII Python identifier"),
        ("café", "not a lower-case ASCII Python identifier"),
        ("class", "is a Python keyword"),
        ("match", "is a Python keyword"),
        ("torch", "would shadow"),
        ("lightning", "would shadow"),
        ("json", "would shadow"),
        ("tests", "would shadow"),
    ],
)
def test_pre_gen_refuses_bad_package_names(package: str, reason: str) -> None:
    errors = load_hook("pre_gen_project").validate({**ANSWERS, "package_name": package})
    assert any(reason in error for error in errors), errors


def test_pre_gen_refuses_a_bad_slug() -> None:
    errors = load_hook("pre_gen_project").validate({**ANSWERS, "project_slug": "My Project"})
    assert any("project_slug" in error for error in errors)


@pytest.mark.parametrize(
    "task, network",
    [
        ("tabular_classification", "small_cnn"),
        ("tabular_classification", "resnet18"),
        ("image_classification", "mlp"),
    ],
)
def test_pre_gen_refuses_a_network_that_does_not_fit_the_task(task: str, network: str) -> None:
    errors = load_hook("pre_gen_project").validate({**ANSWERS, "task": task, "network": network})
    assert any(f"network {network!r} does not fit task {task!r}" in error for error in errors)


def test_every_supported_combination_passes_the_hook() -> None:
    hook = load_hook("pre_gen_project")
    for answers in COMBINATIONS:
        assert hook.validate({**ANSWERS, **answers}) == [], answers


@pytest.mark.parametrize("email", ["nobody", "a@b", "two@@example.com", "sp ace@example.com"])
def test_pre_gen_refuses_a_malformed_email(email: str) -> None:
    errors = load_hook("pre_gen_project").validate({**ANSWERS, "email": email})
    assert any("is not an e-mail address" in error for error in errors)


def test_pre_gen_accepts_no_email() -> None:
    assert load_hook("pre_gen_project").validate({**ANSWERS, "email": ""}) == []


def test_pre_gen_accepts_the_defaults() -> None:
    assert load_hook("pre_gen_project").validate(ANSWERS) == []


@pytest.mark.parametrize(
    "answers",
    [{"package_name": "class"}, {"task": "tabular_classification", "network": "resnet18"}],
)
def test_refused_bake_writes_nothing(tmp_path: Path, answers: dict, capfd) -> None:
    with pytest.raises(FailedHookException):
        bake(tmp_path, **answers)
    assert list(tmp_path.iterdir()) == []
    assert "ERROR: " in capfd.readouterr().err


@pytest.mark.parametrize("task", ["image_classification", "tabular_classification"])
def test_post_gen_removes_only_the_other_tasks_files(task: str) -> None:
    hook = load_hook("post_gen_project")
    removed = hook.files_to_remove({"task": task, "include_ci": "yes"})
    own = hook.TASK_FILES[task]
    assert removed and not set(removed) & set(own)
    assert ".github" not in removed


def test_post_gen_removes_ci_files_when_not_wanted() -> None:
    hook = load_hook("post_gen_project")
    assert set(hook.CI_FILES) <= set(hook.files_to_remove({**ANSWERS, "include_ci": "no"}))


def test_post_gen_deletes_files_and_folders(tmp_path: Path) -> None:
    hook = load_hook("post_gen_project")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".pre-commit-config.yaml").write_text("repos: []\n")
    (tmp_path / "keep.txt").write_text("")
    hook.main(tmp_path, {**ANSWERS, "include_ci": "no"})
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
