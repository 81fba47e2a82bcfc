"""Fixtures for running papayya as a user would: the CLI and scripts as subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell pointed at the test database (and nothing else of papayya's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env["PAPAYYA_DATABASE_URL"] = database_url
    env["PAPAYYA_HOME"] = str(tmp_path / "cli-home")  # never an embedded server in the working directory
    return env
