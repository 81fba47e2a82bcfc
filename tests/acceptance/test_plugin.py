"""A third-party plugin installs like any package and is chosen by configuration: the example plugin
in examples/papayya_inline registers the `inline` backend through the `papayya` entry-point group,
and the unchanged tenant batch gives the same outcomes and costs on it as on the native engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.acceptance.test_example import ROOT, per_tenant, run_example


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Path:
    """examples/papayya_inline installed (a real wheel build and install) into a directory of its own;
    built from a copy, so the build leaves nothing in the source tree."""
    source = tmp_path / "papayya_inline"
    shutil.copytree(ROOT / "examples" / "papayya_inline", source)
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


@pytest.mark.slow
def test_an_installed_backend_plugin_is_selected_by_configuration(
    installed_plugin: Path, database_url: str, tmp_path: Path
) -> None:
    path = os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])
    shown = subprocess.run(
        [sys.executable, "-m", "papayya", "config", "show"],
        env={**os.environ, "PYTHONPATH": path, "PAPAYYA_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "inline" in shown.stdout.splitlines()[-1]

    native = per_tenant(run_example(database_url, tmp_path))
    inline = per_tenant(
        run_example(database_url, tmp_path, extra_env={"PAPAYYA_BACKEND": "inline", "PYTHONPATH": path})
    )
    assert inline == native
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM papayya.runs WHERE backend = 'inline'").fetchone()
    assert row is not None
    assert row[0] >= 3  # one run per tenant went through the plugin
