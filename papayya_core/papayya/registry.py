"""How replay, resume and generic workers find the agent a run was started with, without running a
user's batch again.

Two ways, in this order:

1. **The registry.** Every ``Agent`` registers itself by its papayya name when it is created, so an
   agent defined in the running process (a script calling ``papayya.replay``, a notebook, a REPL, a
   worker that imported its module) is found by name without importing anything. Lookups go by name,
   not by attribute path, so wrappers work (``@app.task`` above ``@agent``).
2. **An import, only when it is safe.** At an agent's first ``map()``/``submit()`` papayya records how
   to import it again (``entrypoint``): its importable module name, the directory to import it from,
   and, when the call that started the run sits in the agent's own module at top level (a script),
   whether that line is under ``if __name__ == "__main__":``. A module whose top-level code started
   the run is imported again only when that code is guarded; otherwise importing it would start the
   batch again (and pay for it again), so papayya refuses with one sentence naming the file and line.
   papayya never executes a user's file any other way.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
import threading
import weakref
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from papayya.errors import AgentNotImportable

if TYPE_CHECKING:
    from papayya.agent import Agent

_agents: weakref.WeakValueDictionary[str, Agent] = weakref.WeakValueDictionary()
_lock = threading.Lock()
_import_lock = threading.RLock()

# Attribute calls on an agent that start (or restart) a batch when run at a module's top level.
BATCH_METHODS = frozenset({"map", "submit", "replay", "resume"})


def register(agent: Agent) -> None:
    """Make ``agent`` findable by its name in this process (the latest definition of a name wins)."""
    with _lock:
        _agents[agent.name] = agent


def lookup(name: str) -> Agent | None:
    """The agent of this process named ``name``, if one is defined (nothing is imported)."""
    with _lock:
        return _agents.get(name)


# -- recording how to find an agent again ----------------------------------------------------------


def entrypoint(agent: Agent) -> dict[str, Any]:
    """How this agent can be found again from another process, recorded with each run it starts.

    ``module`` is the importable module name (``None`` for an interactive session), ``root`` the
    directory that makes it importable, ``file`` its source file, and ``started`` where the batch was
    started when that was top-level code of the agent's own module (``{"line": N, "guarded": bool}``;
    ``None`` when it was started elsewhere, e.g. from another module or a worker).
    """
    from papayya.agent import importable_module_name

    fn = agent.fn
    try:
        source: str | None = inspect.getsourcefile(fn)
    except TypeError:
        source = None
    file = str(Path(source).resolve()) if source and Path(source).is_file() else None
    module: str | None = importable_module_name(fn)
    if module == "__main__" or file is None:
        module = None  # an interactive session or a notebook: only this process knows the agent
    return {
        "module": module,
        "qualname": fn.__qualname__,
        "file": file,
        "root": _root_of(file, module),
        "started": _started_at(file),
    }


def _root_of(file: str | None, module: str | None) -> str | None:
    """The directory from which ``import module`` finds ``file`` (``/p`` for ``/p/pkg/mod.py``)."""
    if file is None or module is None:
        return None
    path = Path(file)
    parts = module.split(".")
    base = path.parent if path.name == "__init__.py" else path.with_suffix("")
    for part in reversed(parts):
        if base.name != part:
            return None
        base = base.parent
    return str(base)


def _started_at(file: str | None) -> dict[str, Any] | None:
    """Where top-level code of ``file`` is calling into papayya now, and whether it is guarded."""
    if file is None:
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>" and _same_file(code.co_filename, file):
            line = frame.f_lineno
            main = frame.f_globals.get("__name__") == "__main__"
            return {"line": line, "guarded": main and _guarded(file, line)}
        frame = frame.f_back
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b)
    except OSError:
        return False


def _parse(file: str) -> ast.Module | None:
    try:
        return ast.parse(Path(file).read_bytes(), filename=file)
    except (OSError, SyntaxError, ValueError):
        return None


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either operand order)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _guarded(file: str, line: int) -> bool:
    """True when ``line`` of ``file`` lies in the body of a top-level ``if __name__ == "__main__":``."""
    tree = _parse(file)
    if tree is None:
        return False
    for node in tree.body:
        if _is_main_guard(node) and isinstance(node, ast.If) and node.body:
            first, last = node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno
            if first <= line <= last:
                return True
    return False


def unguarded_batch_line(file: str) -> int | None:
    """The first top-level line of ``file``, outside ``if __name__ == "__main__":``, that starts a
    batch: it calls ``map``/``submit``/``replay``/``resume`` on one of the file's decorated functions
    (its agents), or calls a function of the file that does (directly or through others).

    A static check, for runs recorded before papayya noted where a batch started and for ``papayya
    worker path/to/script.py:agent``. Returns None when the file does not parse (the import says so).
    """
    tree = _parse(file)
    if tree is None:
        return None
    functions = {
        node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    agents = {name for name, node in functions.items() if node.decorator_list}

    def calls(node: ast.AST) -> list[ast.Call]:
        return [c for c in _walk_outside_functions(node) if isinstance(c, ast.Call)]

    def starts_batch(call: ast.Call, starters: set[str]) -> bool:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in BATCH_METHODS:
            return isinstance(func.value, ast.Name) and func.value.id in agents | {"papayya"}
        return isinstance(func, ast.Name) and func.id in starters

    starters: set[str] = set()
    changed = True
    while changed:  # functions that start a batch, directly or through other functions of the file
        changed = False
        for name, node in functions.items():
            if name not in starters and any(
                starts_batch(c, starters) for stmt in node.body for c in calls(stmt)
            ):
                starters.add(name)
                changed = True
    for stmt in tree.body:
        if _is_main_guard(stmt) or isinstance(
            stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom
        ):
            continue
        for call in calls(stmt):
            if starts_batch(call, starters):
                return call.lineno
    return None


def _walk_outside_functions(node: ast.AST) -> list[ast.AST]:
    found: list[ast.AST] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        for child in ast.iter_child_nodes(current):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                stack.append(child)
    return found


# -- finding an agent again --------------------------------------------------------------------------


def find(agent_name: str, entrypoint: dict[str, Any] | None, *, verb: str = "resume") -> Agent:
    """The agent named ``agent_name``: from this process's registry, else by importing its module
    where that cannot start a batch again.

    ``verb`` ("resume", "replay" or "run") words the errors for what the caller is doing.

    Raises:
        AgentNotImportable: one sentence saying why the agent cannot be found here and what to do.
    """
    found = lookup(agent_name)
    if found is not None:
        return found
    ep = entrypoint or {}
    short = agent_name.rsplit(".", 1)[-1]
    instead = (
        f"{verb} it in the process that defines the agent with {short}.{verb}(...)"
        if verb in ("resume", "replay")
        else "serve it with a worker that imports the agent's module"
    )
    qualname = str(ep.get("qualname") or "")
    if "<locals>" in qualname:
        raise AgentNotImportable(
            f"Agent {agent_name} was defined inside a function, so it cannot be imported; {instead}."
        )
    module, root, file = _import_target(agent_name, ep)
    if module is None:
        raise AgentNotImportable(
            f"Agent {agent_name} was defined in an interactive session or a notebook, which no other "
            f"process can import; {instead}."
        )
    if file is not None and not Path(file).is_file():
        raise AgentNotImportable(
            f"The script that started this run ({file}) is not here any more; {instead}."
        )
    refuse_unguarded(file, ep, instead)
    with _import_lock:
        if root and root not in sys.path:
            sys.path.insert(0, root)
        try:
            imported = importlib.import_module(module)
        except ImportError as exc:
            raise AgentNotImportable(
                f"Cannot import the agent's module {module!r} ({exc}); run `papayya {verb}` where the "
                "agent's code is importable (the same directory, or PYTHONPATH)."
            ) from exc
    found = lookup(agent_name) or unwrap(_attribute(imported, qualname))
    if found is None or found.name != agent_name:
        raise AgentNotImportable(f"{module} no longer defines a papayya agent named {agent_name}; {instead}.")
    return found


def _import_target(agent_name: str, ep: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(module, root, file) to import; reads entrypoints recorded before ``root`` was recorded too."""
    file = ep.get("file")
    if "root" in ep:
        return ep.get("module"), ep.get("root"), file
    module = ep.get("module")
    if module == "__main__":  # an earlier papayya recorded the script's __main__: its name is the agent's
        qualname = str(ep.get("qualname") or "")
        suffix = "." + qualname
        module = agent_name.removesuffix(suffix) if qualname and agent_name.endswith(suffix) else None
        if module is None and file:
            module = Path(file).stem
    return module, (_root_of(file, module) if file and module else None), file


def refuse_unguarded(file: str | None, ep: dict[str, Any], instead: str) -> None:
    """Raise AgentNotImportable when importing ``file`` would run a batch at its top level."""
    if file is None:
        return
    started = ep.get("started")
    if isinstance(started, dict) and not started.get("guarded"):
        line = started.get("line")
        raise AgentNotImportable(
            f"This run was started by top-level code of {file} (line {line}) that is not under "
            '`if __name__ == "__main__":`, so importing the script would start that batch again and '
            f"pay for it again; move the batch under the guard, or {instead}."
        )
    line = unguarded_batch_line(file)
    if line is not None:
        raise AgentNotImportable(
            f"{file} starts a batch at its top level (line {line}) outside "
            '`if __name__ == "__main__":`, so importing it would run that batch again and pay for it '
            f"again; move the batch under the guard, or {instead}."
        )


def _attribute(module: Any, qualname: str) -> Any:
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def unwrap(obj: Any) -> Agent | None:
    """The papayya Agent inside ``obj``: itself, or what a framework's wrapper holds (a Celery task's
    ``run``, a decorator's ``__wrapped__``)."""
    from papayya.agent import Agent

    for _ in range(8):
        if isinstance(obj, Agent):
            return obj
        inner = getattr(obj, "__wrapped__", None)
        if inner is None or inner is obj:
            inner = getattr(obj, "run", None)
        if inner is None or inner is obj:
            return None
        obj = inner
    return None
