"""One agent, any backend: the unchanged tenant batch gives the same outcomes and costs per tenant on
the native engine, Celery, Temporal and SQS, chosen by configuration only.

Each backend other than native brings its generic workers up in ``tests/acceptance/switch_<name>.py``:
a context manager ``workers(env, cwd)`` that starts them (processes that run any agent from the run's
record) and yields the environment the example needs (``PAPAYYA_BACKEND`` and the connection settings).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_example import per_tenant, run_example

BACKENDS = ["native", "celery", "temporal", "sqs"]


@contextlib.contextmanager
def backend_env(backend: str, env: dict[str, str], cwd: Path) -> Iterator[dict[str, str]]:
    if backend == "native":
        yield {"PAPAYYA_BACKEND": "native"}
        return
    try:
        module = importlib.import_module(f"tests.acceptance.switch_{backend}")
    except ModuleNotFoundError:
        pytest.fail(
            f"tests/acceptance/switch_{backend}.py is missing: the {backend} backend cannot be switched to"
        )
    with module.workers(env, cwd) as extra:
        yield {"PAPAYYA_BACKEND": backend, **extra}


@pytest.fixture(scope="module")
def native_summary(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, int, int, str]]:
    return per_tenant(run_example(database_url, tmp_path_factory.mktemp("native")))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_tenant_batch_gives_the_same_outcomes_and_costs_on_every_backend(
    backend: str,
    database_url: str,
    tmp_path: Path,
    native_summary: dict[str, tuple[int, int, int, str]],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAPAYYA_", "OPENAI_"))}
    env["PAPAYYA_DATABASE_URL"] = database_url
    with backend_env(backend, env, tmp_path) as extra:
        out = run_example(database_url, tmp_path, extra_env=extra)
    assert per_tenant(out) == native_summary
