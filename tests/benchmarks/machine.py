"""What every benchmark prints first: a throwaway papayya home and the machine it ran on."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import papayya


def configure_store() -> str:
    """Configure papayya on PAPAYYA_DATABASE_URL, or an embedded server in a temp home; say which."""
    papayya.configure(home=Path(tempfile.mkdtemp(prefix="papayya-bench-")), progress=False)
    if os.environ.get("PAPAYYA_DATABASE_URL"):
        return "PostgreSQL server"
    return "embedded PostgreSQL (Unix socket)"


def machine_line(store: str) -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; store: {store}"
    )
