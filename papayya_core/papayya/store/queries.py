"""Named queries, parsed once from ``queries.sql``."""

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
            raise ValueError(f"query {name!r} is defined twice in queries.sql")
        queries[name] = sql.strip().rstrip(";")  # a trusted file shipped with papayya
    return queries


@cache
def queries() -> dict[str, LiteralString]:
    return parse(resources.files("papayya.store").joinpath("queries.sql").read_text("utf-8"))


def q(name: str) -> LiteralString:
    return queries()[name]
