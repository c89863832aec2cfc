"""The image ships the product only (issue 11 item 7): the packages it copies (bot,
handlers, jobs) hold no test double, import nothing from tests/ or the demo, and
`aibrix-bot demo` in such an install says where the demo runs instead of failing."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bot import messages
from tests.conftest import REPO

SHIPPED = ("bot", "handlers", "jobs")  # what the Dockerfile copies and pyproject installs
DEV_ONLY = ("tests", "demo")


def shipped_sources() -> list[Path]:
    return sorted(p for package in SHIPPED for p in (REPO / package).rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_the_image_copies_only_the_product_packages() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert {"bot", "handlers", "jobs"} <= copied
    assert not copied & {"tests", "demo", ".", "./"}
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert not [a for a in allowed if a.split("/")[0] in DEV_ONLY]


def test_no_shipped_module_imports_the_tests_or_the_demo() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in shipped_sources()
        for name in sorted(imported_modules(ast.parse(path.read_text())))
        if name.split(".")[0] in DEV_ONLY
    ]
    assert offenders == []


def test_the_slack_stand_in_and_the_signed_client_are_not_shipped() -> None:
    defined = {
        node.name
        for path in shipped_sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }
    assert not defined & {"SlackStandIn", "SignedSlackClient", "SlackPayloads"}


def test_demo_in_an_install_without_it_says_it_runs_from_a_clone(tmp_path: Path) -> None:
    install = tmp_path / "install"
    for package in SHIPPED:
        shutil.copytree(
            REPO / package, install / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(['demo']))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(install)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == messages.demo_needs_a_clone()
    assert result.stdout == ""


def test_the_demo_loads_from_the_clone() -> None:
    demo = importlib.import_module("demo.run")
    assert callable(demo.run_demo)
