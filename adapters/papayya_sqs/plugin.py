"""The ``sqs`` backend, registered through papayya's plugin hook (entry point ``papayya``/``sqs``).

Importing this module does not import boto3; choosing ``PAPAYYA_BACKEND=sqs`` without it installed is
one clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from papayya.hookspecs import hookimpl


def _backend() -> Any:
    from papayya_sqs import require_boto3

    require_boto3()
    from papayya_sqs.backend import SqsBackend

    return SqsBackend()


@hookimpl
def papayya_register_backends(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """SQS: each item is one message; ``papayya_sqs.Consumer`` processes run it through papayya."""
    register("sqs", _backend)
