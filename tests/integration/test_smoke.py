from __future__ import annotations

from papayya import agent
from papayya.runtime import Runtime


def test_map_records_every_item(rt: Runtime, tenant: str) -> None:
    @agent
    def echo(item):
        return {"id": item.id}

    result = echo.map([{"id": str(i)} for i in range(20)], tenant=tenant)
    assert result.counts == {"succeeded": 20, "degraded": 0, "failed": 0}
