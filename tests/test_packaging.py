"""Set-up and packaging (issue 14, item 10): one version, a license that matches its
metadata, a demo install without the chart tools, and a Makefile that leaves the choice of
package index to the user's own pip configuration."""

from __future__ import annotations

import importlib.metadata
import os
import re

import tomllib

import wq_redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART_TOOLS = ("helm-python-sdk", "kubernetes-validate", "jsonschema", "pyyaml")


def project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=;!~]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_version_is_written_once_and_installed_as_written():
    assert "version" in project()["dynamic"]
    assert importlib.metadata.version("wq-redis") == wq_redis.__version__
    literal = re.compile(re.escape(f'"{wq_redis.__version__}"'))
    for folder, _, files in os.walk(os.path.join(ROOT, "wq_redis")):
        for name in files:
            the_one_place = os.path.join(folder, name) == os.path.join(ROOT, "wq_redis", "protocol", "version.py")
            if name.endswith(".py") and not the_one_place:
                with open(os.path.join(folder, name)) as handle:
                    assert not literal.search(handle.read()), f"{name} writes the version again"


def test_the_license_file_is_the_declared_license():
    meta = project()
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    with open(os.path.join(ROOT, "LICENSE")) as handle:
        text = handle.read()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_the_demo_install_leaves_the_chart_tools_to_the_deploy_extra():
    meta = project()
    assert not names(meta["dependencies"]) & set(CHART_TOOLS)
    assert set(CHART_TOOLS) <= names(meta["optional-dependencies"]["deploy"])
    with open(os.path.join(ROOT, "Makefile")) as handle:
        makefile = handle.read()
    demo_install = re.search(r"^\$\(VENV\)/\.installed:.*?(?=^\S)", makefile, re.M | re.S).group(0)
    assert "pip install -e .\n" in demo_install and "[" not in demo_install.split("pip install -e", 1)[1]
    assert "'.[test,deploy]'" in makefile


def test_the_makefile_names_no_package_index():
    with open(os.path.join(ROOT, "Makefile")) as handle:  # comments may say so; commands must not
        commands = "\n".join(line for line in handle.read().splitlines() if not line.lstrip().startswith("#"))
    for host in ("pypi.org", "pythonhosted.org", "--index-url", "--extra-index-url", "PIP_INDEX_URL", "https://"):
        assert host not in commands


def lower_bound(requirements: list[str], name: str) -> str:
    """The ``>=`` version of ``name`` in a list of requirements."""
    for requirement in requirements:
        found = re.fullmatch(rf"{re.escape(name)}(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+).*", requirement, re.I)
        if found:
            return found.group(1)
    raise AssertionError(f"{name} has no >= bound in {requirements}")


def test_pre_commit_runs_the_linters_of_make_lint_at_the_pinned_versions():
    """A contributor's hooks and CI's `make lint` must not disagree on a format or a rule."""
    lint = project()["optional-dependencies"]["lint"]
    with open(os.path.join(ROOT, ".pre-commit-config.yaml")) as handle:
        config = handle.read()
    revisions = dict(
        re.findall(r"repo: https://github\.com/[\w-]+/(ruff-pre-commit|mirrors-mypy)\s+rev: v(\S+)", config)
    )
    assert revisions == {"ruff-pre-commit": lower_bound(lint, "ruff"), "mirrors-mypy": lower_bound(lint, "mypy")}
    # The mypy hook's own venv gets the typed dependencies at the ranges the project declares
    # (without extras and markers, which the hook's venv does not need).
    declared = {re.sub(r"\[[^\]]*\]|;.*|\s", "", r) for r in project()["dependencies"] + lint}
    hook_deps = re.findall(r'^\s+- "([^"]+)"$', config, re.M)
    assert hook_deps and set(hook_deps) <= declared, set(hook_deps) - declared
    with open(os.path.join(ROOT, "Makefile")) as handle:
        lint_paths = re.search(r"^LINT_PATHS := (.*)$", handle.read(), re.M).group(1).split()
    ruff_files = re.findall(r"id: ruff-\w+\s+files: \^\(([^)]*)\)/", config)
    assert ruff_files and all(set(files.split("|")) == set(lint_paths) for files in ruff_files)
