"""papayya.instrument with no SDK at all: it needs only the shape of a client."""

from __future__ import annotations

import logging

from papayya import instrument


def test_a_resource_the_client_lacks_is_skipped() -> None:
    # As with an older SDK that has no client.responses: the rest is still instrumented.
    class Resource:
        def create(self) -> str:
            return "made"

    class Client:
        chat = Resource()

        def copy(self) -> Client:
            return Client()

        with_options = copy

    targets = [
        instrument.Target("chat", step="x.chat", decode=dict),
        instrument.Target("responses", step="x.responses", decode=dict),
    ]
    client = Client()

    instrument.instrument_client(client, targets, provider="x", is_async=False, log=logging.getLogger("x"))

    assert client.chat.create() == "made"  # outside an attempt: the original
    assert hasattr(client.chat.create, "__papayya_original__")
    instrument.uninstrument_client(client, targets)
    assert not hasattr(client.chat.create, "__papayya_original__")
