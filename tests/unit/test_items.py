from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from papayya import InputError, Item
from papayya.agent import prepare_items


class Row(BaseModel):
    id: int
    name: str
    seen: datetime


@dataclasses.dataclass
class Rec:
    id: str
    value: float


def test_accepts_dicts_models_items_and_dataclasses() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    prepared = prepare_items(
        [{"id": "a", "x": 1}, Row(id=2, name="b", seen=when), Item("c", {"y": 2}), Rec("d", 1.5)],
        max_bytes=10_000,
    )
    assert [key for key, _ in prepared] == ["a", "2", "c", "d"]
    assert json.loads(prepared[1][1]) == {"id": 2, "name": "b", "seen": "2026-01-02T00:00:00Z"}
    assert json.loads(prepared[2][1]) == {"y": 2}


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        ([{"x": 1}], "Item #0 has no id"),
        ([{"id": ""}], "Item #0 has no id"),
        ([{"id": "a"}, {"id": "b"}, {"id": "a"}], "Item id 'a' appears twice (#0 and #2)"),
        ([{"id": "a", "when": object()}], "Item 'a': its input is not JSON-serialisable"),
        ([{"id": "a", "score": float("nan")}], "Item 'a': its input is not JSON-serialisable"),
        ([{"id": "a", "text": "x\x00y"}], "NUL character"),
        ([{"id": "big", "blob": "x" * 2000}], "Item 'big': its input is 2,"),
        ([{"id": 1.5}], "Item #0 has an id of type float"),
        ([42], "Item #0 is a int"),
        ([], "No items were given"),
        ({"id": "a"}, "not a single dict"),
    ],
)
def test_bad_input_names_the_item_and_the_fix(items: object, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        prepare_items(items, max_bytes=1000)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert str(info.value).endswith(".")


def test_item_reads_like_a_dict() -> None:
    item = Item("k1", {"domain": "a.example"}, extra=1)
    assert item.id == "k1"
    assert item["domain"] == "a.example"
    assert item.get("missing", 3) == 3
    assert "extra" in item


def test_a_refusal_names_a_key_a_path_cannot_show_as_is_escaped_on_one_line() -> None:
    with pytest.raises(InputError) as refused:
        prepare_items([{"id": "0", "line\nbreak": {"a.b": "\x00"}}], max_bytes=1_048_576)
    assert str(refused.value) == (
        """Item '0': its input at $["line\\nbreak"]["a.b"] contains a NUL character (\\u0000), which """
        "PostgreSQL cannot store; strip it."
    )
