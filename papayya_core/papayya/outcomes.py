"""Classifying what an attempt produced: schema, inspectors, user checks and signals -> an outcome.

A check or inspector that raises is logged and treated as a pass: an observer never fails an item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from papayya.models import Reason

if TYPE_CHECKING:
    from papayya.context import AttemptContext

log = logging.getLogger("papayya.outcomes")

# check(output, item) -> None or True when fine; a reason (str or Reason) or False when not.
Check = Callable[[Any, Any], Any]

_SCHEMA_CODES = {
    "missing": "schema.missing_field",
    "extra_forbidden": "schema.extra_field",
}


def validate_output(model: type[BaseModel], output: Any) -> tuple[Any, list[Reason]]:
    """Validate ``output`` against ``model``, refusing fields the model does not declare.

    Returns the JSON form to record and the reasons it falls short (empty when it is valid). A
    hallucinated field name (``compnay_size``) is reported as ``schema.extra_field`` at its path.
    """
    if isinstance(output, BaseModel):
        data = output.model_dump(mode="json")
    else:
        data = to_jsonable_python(output, fallback=repr)
    try:
        model.model_validate(data, extra="forbid")
    except ValidationError as exc:
        reasons = []
        for err in exc.errors(include_url=False, include_input=False):
            path = ".".join(str(p) for p in err["loc"]) or "$"
            code = _SCHEMA_CODES.get(err["type"], "schema.invalid")
            reasons.append(Reason(code=code, path=path, message=f"{path}: {err['msg']}"))
        return data, reasons
    return data, []


def is_empty(output: Any) -> bool:
    if output is None:
        return True
    if isinstance(output, str | bytes | list | tuple | dict | set):
        return len(output) == 0
    return False


def run_checks(checks: Sequence[Check], output: Any, item: Any) -> list[Reason]:
    """Run the agent's checks; each returns None (fine) or a reason (a string or a Reason)."""
    reasons: list[Reason] = []
    for check in checks:
        name = getattr(check, "__name__", type(check).__name__)
        try:
            verdict = check(output, item)
        except Exception:
            log.exception("check %s raised; treated as a pass", name)
            continue
        if verdict is None or verdict is True:
            continue
        if isinstance(verdict, Reason):
            reasons.append(verdict)
        elif verdict is False:
            reasons.append(Reason(code="check", path=name, message=f"check {name} failed"))
        else:
            reasons.append(Reason(code="check", path=name, message=str(verdict)[:500]))
    return reasons


def classify(ctx: AttemptContext, output: Any) -> tuple[Any, list[Reason]]:
    """The JSON output to record and every reason it is degraded (empty: succeeded)."""
    reasons: list[Reason] = list(ctx.signals)
    recorded: Any
    if is_empty(output):
        reasons.append(Reason(code="empty_output", message="the agent returned nothing"))
        recorded = to_jsonable_python(output, fallback=repr)
    elif ctx.agent.output is not None:
        recorded, schema_reasons = validate_output(ctx.agent.output, output)
        reasons.extend(schema_reasons)
    else:
        recorded = to_jsonable_python(output, fallback=repr)
    reasons.extend(ctx.runtime.hooks.inspect_output(ctx, output))
    reasons.extend(run_checks(ctx.agent.checks, output, ctx.item))
    return recorded, _dedupe(reasons)


def _dedupe(reasons: list[Reason]) -> list[Reason]:
    seen: set[tuple[str, str | None]] = set()
    out = []
    for r in reasons:
        if (r.code, r.path) not in seen:
            seen.add((r.code, r.path))
            out.append(r)
    return out
