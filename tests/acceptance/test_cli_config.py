"""``papayya config show``, run as a user runs it: in a project directory with a pyproject.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PYPROJECT = """\
[project]
name = "enrichment"

[tool.papayya]
backend = "celery"
lease_seconds = 30
database_url = "postgresql://app:hunter2@db.internal:5432/papayya"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (tmp_path / "src" / "jobs").mkdir(parents=True)
    return tmp_path


def papayya(cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PAPAYYA_")}
    proc = subprocess.run(
        [sys.executable, "-m", "papayya", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def show_json(cwd: Path, **env: str) -> dict[str, Any]:
    code, out, err = papayya(cwd, "config", "show", "--json", **env)
    assert (code, err) == (0, "")
    data: dict[str, Any] = json.loads(out)
    return data


def test_show_lists_each_setting_with_where_it_came_from(project: Path) -> None:
    code, out, err = papayya(project / "src" / "jobs", "config", "show", PAPAYYA_MAX_STALLS="5")

    assert (code, err) == (0, "")
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    path = str(project / "pyproject.toml")
    assert lines["backend"] == ["celery", path]
    assert lines["lease_seconds"] == ["30.0", path]
    assert lines["max_stalls"] == ["5", "env", "PAPAYYA_MAX_STALLS"]
    assert lines["pool_size"] == ["16", "default"]
    assert lines["database_url"] == ["postgresql://app:***@db.internal:5432/papayya", path]
    assert "hunter2" not in out
    assert f"[tool.papayya] of {path}" in out
    assert "Installed backends:" in out
    assert "native" in out


def test_the_environment_wins_over_the_file(project: Path) -> None:
    data = show_json(project, PAPAYYA_BACKEND="native", PAPAYYA_DATABASE_URL="postgresql://u:pw@h/db")

    settings = data["settings"]
    assert settings["backend"] == {"value": "native", "source": "env", "from": "PAPAYYA_BACKEND"}
    assert settings["database_url"] == {
        "value": "postgresql://u:***@h/db",
        "source": "env",
        "from": "PAPAYYA_DATABASE_URL",
    }
    assert settings["lease_seconds"] == {
        "value": 30.0,
        "source": "file",
        "from": str(project / "pyproject.toml"),
    }
    assert settings["otel"] == {"value": False, "source": "default", "from": None}
    assert data["file"] == str(project / "pyproject.toml")
    assert "native" in data["backends"]


def test_json_without_a_file_is_all_defaults(tmp_path: Path) -> None:
    data = show_json(tmp_path)
    assert data["file"] is None
    assert {s["source"] for s in data["settings"].values()} == {"default"}
    assert data["settings"]["backend"]["value"] == "native"


def test_config_file_variable_and_a_bad_key_is_one_sentence(project: Path) -> None:
    other = project / "ops" / "papayya.toml"
    other.parent.mkdir()
    other.write_text("backend = 'sqs'\nlease_seconds = 'soon'\n", encoding="utf-8")

    code, out, err = papayya(project, "config", "show", PAPAYYA_CONFIG_FILE=str(other))

    assert (code, out) == (2, "")
    assert err.startswith(f"papayya: Setting 'lease_seconds' in {other} is invalid")
    assert err.count("\n") == 1

    other.write_text("backend = 'sqs'\n", encoding="utf-8")
    data = show_json(project, PAPAYYA_CONFIG_FILE=str(other))
    assert data["settings"]["backend"] == {"value": "sqs", "source": "file", "from": str(other)}
