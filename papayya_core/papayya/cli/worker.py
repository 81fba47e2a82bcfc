"""``papayya worker MODULE:AGENT ...``: serve the native engine's queue from this machine.

Run one on each machine (or ``--processes N`` to use N cores here): every worker claims queued items
of the agents it serves from the shared PostgreSQL, fairly across tenants, and runs them through the
one lifecycle. SIGTERM (or Ctrl-C) stops it gracefully: it stops claiming, lets items in flight finish
within ``--grace`` seconds and gives the rest back to the queue. A worker killed without warning loses
nothing either: its items are given back by the reaper once their leases expire.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from papayya import registry
from papayya.cli.connect import connect
from papayya.cli.control import import_from_here
from papayya.errors import AgentNotImportable, InputError

if TYPE_CHECKING:
    from papayya.agent import Agent


def load_spec(spec: str) -> Agent:
    """Import ``module:name`` (or ``path/to/file.py:name``) and return the agent it names.

    The module is imported, never executed as a file; a script that starts a batch at its top level
    (outside ``if __name__ == "__main__":``) is refused before the import, since importing it would
    start that batch again from every worker.
    """
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise InputError(f"{spec!r} is not MODULE:AGENT; name the agent like examples.tenant_batch:enrich.")
    import_from_here()
    instead = "serve an agent whose module starts no batch when imported"
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.is_file():
                raise AgentNotImportable(
                    f"There is no file {module_name}; give the path to the agent's script."
                )
            try:
                module_name = ".".join(path.with_suffix("").relative_to(Path.cwd().resolve()).parts)
            except ValueError:
                module_name = path.stem
                if str(path.parent) not in sys.path:
                    sys.path.insert(0, str(path.parent))
            origin: str | None = str(path)
        else:
            found = importlib.util.find_spec(module_name)
            origin = found.origin if found is not None else None
        if origin and origin.endswith(".py") and Path(origin).is_file():
            registry.refuse_unguarded(origin, {}, instead)
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentNotImportable(
            f"Cannot import {module_name!r} ({exc}); run the worker where the agent's code is importable "
            "(its directory, or PYTHONPATH)."
        ) from exc
    obj: object = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    found_agent = registry.unwrap(obj)
    if found_agent is None:
        raise AgentNotImportable(f"{spec} is not a papayya agent; decorate the function with @papayya.agent.")
    return found_agent


@click.command("worker")
@click.argument("agents", metavar="MODULE:AGENT...", nargs=-1, required=True)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="Items run at once.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes on this machine (one per core to use them all); crashed ones are restarted.",
)
@click.option("--burst", is_flag=True, help="Exit once no item of these agents is queued or running.")
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="Seconds items in flight get to finish on SIGTERM before they are given back.",
)
@click.option(
    "--poll",
    type=click.FloatRange(0.01, 60),
    default=1.0,
    show_default=True,
    help="Seconds between claims when idle (new work also wakes workers at once).",
)
def worker_command(
    agents: tuple[str, ...], concurrency: int, processes: int, burst: bool, grace: float, poll: float
) -> None:
    """Serve the native engine's queue: claim queued items of AGENTS and run them.

    \b
    Examples:
      papayya worker examples.tenant_batch:enrich --concurrency 16
      PAPAYYA_DATABASE_URL=postgresql://db/papayya papayya worker app.agents:enrich app.agents:classify
    """
    from papayya import engine
    from papayya.runtime import get_runtime

    loaded = [load_spec(spec) for spec in agents]
    connect()
    rt = get_runtime()
    names = ", ".join(a.name for a in loaded)
    if processes > 1:
        _supervise(list(agents), rt.store.url, concurrency, processes, burst, grace, poll)
        return
    worker = engine.Worker(rt, loaded, concurrency=concurrency, burst=burst, poll=poll)

    def stop(signum: int, frame: FrameType | None) -> None:
        click.echo(f"papayya worker: stopping (finishing items in flight, {grace:g}s at most)", err=True)
        worker.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"papayya worker {os.getpid()}: serving {names} with {concurrency} at once", err=True)
    stats = worker.run(grace=grace)
    click.echo(
        f"papayya worker {os.getpid()}: stopped; {stats.concluded:,} attempt(s) concluded, "
        f"{stats.released:,} given back, {stats.stale:,} discarded (their lease had moved on)",
        err=True,
    )


def _supervise(
    specs: list[str], url: str, concurrency: int, processes: int, burst: bool, grace: float, poll: float
) -> None:
    """Run ``processes`` single-process workers, restarting any that crash, until stopped (or, in burst
    mode, until each has exited). They get this process's database URL, so an embedded server is
    started by this process only."""
    env = {**os.environ, "PAPAYYA_DATABASE_URL": url}
    args = [sys.executable, "-m", "papayya", "worker", *specs, "-c", str(concurrency), "--grace", str(grace)]
    args += ["--poll", str(poll)] + (["--burst"] if burst else [])
    children: list[subprocess.Popen[bytes]] = [subprocess.Popen(args, env=env) for _ in range(processes)]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        alive = 0
        for n, child in enumerate(children):
            code = child.poll()
            if code is None:
                alive += 1
            elif code != 0 and not stopping and not burst:
                click.echo(f"papayya worker: process {child.pid} exited ({code}); starting another", err=True)
                children[n] = subprocess.Popen(args, env=env)
                alive += 1
        if not alive:
            return
        time.sleep(0.2)
