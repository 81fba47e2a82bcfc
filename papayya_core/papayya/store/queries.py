"""Named queries, parsed once from the ``.sql`` files of ``papayya.store`` (``queries.sql`` and one file
per part that has its own, e.g. ``engine.sql``). A name is defined once across all of them."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, LiteralString]:
    """Split a ``.sql`` file into ``{name: query}`` at each ``-- name: NAME`` header."""
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines() if not line.lstrip().startswith("--"))
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in one file")
        queries[name] = sql.strip().rstrip(";")  # a trusted file shipped with papayya
    return queries


@cache
def queries() -> dict[str, LiteralString]:
    merged: dict[str, LiteralString] = {}
    files = sorted(
        (f for f in resources.files("papayya.store").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    for f in files:
        for name, sql in parse(f.read_text("utf-8")).items():
            if name in merged:
                raise ValueError(f"query {name!r} is defined twice (again in {f.name})")
            merged[name] = sql
    return merged


def q(name: str) -> LiteralString:
    return queries()[name]
