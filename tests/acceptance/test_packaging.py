"""A built wheel, installed into a fresh virtual environment, finds its migrations and runs the example."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.acceptance.test_example import ROOT, check_summary, run_example


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_example(database_url: str, tmp_path: Path) -> None:
    # Given a wheel built from this checkout
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = dist.glob("papayya-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "papayya/migrations/0001_initial.sql" in names
    assert "papayya/store/queries.sql" in names
    assert "papayya/py.typed" in names
    # When it is installed into a fresh venv (dependencies come from this environment, not the checkout)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = str(env_dir / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then papayya is imported from the wheel, not the checkout, and the example runs on it
    where = subprocess.run(
        [
            python,
            "-c",
            "import papayya, papayya.migrate as m; print(papayya.__file__); print(len(m.available()))",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert where[0].startswith(str(env_dir)), where
    assert int(where[1]) >= 1
    check_summary(run_example(database_url, tmp_path, python=python))
