"""The provider side of batch mode: OpenAI's Files + Batch API and Anthropic's Message Batches behind
one small client, so the batcher never sees a JSONL file, an upload or a results stream.

``client_for(provider, base_url=..., api_key=...)`` gives a ``BatchClient`` that can ``create`` a batch
from ``BatchRow``s (checked against the provider's limits and ``custom_id`` rules before anything is
sent), ``find`` the batch a crashed batcher created but did not record (OpenAI by the
``metadata.papayya_batch`` tag, Anthropic, which has no metadata, by size and creation time), read its
``state``, stream its ``results`` (every row once, as a ``RowResult``) and ``cancel`` it.

The SDKs are imported only when a client is built, so the core imports without them. The SDK clients
are plain, not papayya-instrumented: batch traffic is accounted by the batcher, not by ``run.llm``.
Transport and API errors of the SDKs propagate (after the SDK's own 2 retries); the caller retries
with backoff.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from papayya.errors import ConfigError

if TYPE_CHECKING:
    import anthropic
    import openai

__all__ = ["ENDPOINTS", "BatchClient", "BatchRow", "BatchState", "Provider", "RowResult", "client_for"]

Provider = Literal["openai", "anthropic"]
Outcome = Literal["succeeded", "errored", "expired", "canceled"]

ENDPOINTS: dict[str, tuple[Provider, str]] = {
    "openai.chat": ("openai", "/v1/chat/completions"),
    "openai.responses": ("openai", "/v1/responses"),
    "openai.embeddings": ("openai", "/v1/embeddings"),
    "anthropic.messages": ("anthropic", "/v1/messages"),
}
"""papayya's step name of a call -> (the provider, the endpoint its batches go to)."""

MB = 1024 * 1024
_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CLOCK_SKEW = timedelta(seconds=5)  # between papayya's clock (``since``) and the provider's
_MAX_RETRIES = 2
_TIMEOUT, _CONNECT_TIMEOUT = 120.0, 10.0  # seconds; an upload or results file may be large
_TAG_LENGTH = 512  # OpenAI's longest metadata value
_OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
# Anthropic's results give an error type, not the HTTP status it stands for.
_ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@dataclass(frozen=True)
class BatchRow:
    """One request of a batch.

    Attributes:
        custom_id: Matches the row's result to it; ``[A-Za-z0-9_-]{1,64}``, unique within a batch.
        body: The request body the live endpoint would be sent, ``model`` included.
    """

    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BatchState:
    """A provider batch as last read.

    Attributes:
        provider_status: The provider's own word (OpenAI ``status``, Anthropic ``processing_status``).
        ended: No row will change any more; ``results`` may be read.
        failed_reason: Set when the provider rejected the batch as a whole (OpenAI's validation of the
            input file), one sentence naming the lines; None otherwise.
        total: Rows in the batch (0 for a batch rejected as a whole).
        done: Rows whose outcome is final so far: every row once the batch has ended. Anthropic counts
            none before the whole batch ends.
    """

    provider_status: str
    ended: bool
    failed_reason: str | None
    total: int
    done: int


@dataclass(frozen=True)
class RowResult:
    """The outcome of one row of an ended batch.

    Attributes:
        custom_id: The row's ``custom_id``.
        outcome: ``succeeded`` (answered 200, even when cut short: see the body's stop reason),
            ``errored``, ``expired`` (the 24-hour window closed first) or ``canceled``.
        response: For ``succeeded``, the body exactly as the live endpoint returns it; else None.
        error: For ``errored`` and ``expired``, one sentence with the provider's status code, error type
            and message; else None.
        retryable: Whether sending the row again may succeed: True for expired and canceled rows,
            429 and 5xx errors and rows of a batch rejected for another row's fault; False for the
            other 4xx errors.
    """

    custom_id: str
    outcome: Outcome
    response: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = False


def _retryable(status: int | None) -> bool:
    return status is not None and (status in (408, 429) or status >= 500)


def _utc(moment: datetime) -> datetime:
    """``moment`` as an aware datetime; a naive one is taken as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class BatchClient(ABC):
    """One provider account's batches (one client per provider, base URL and API key).

    Attributes:
        provider: ``"openai"`` or ``"anthropic"``.
        max_rows: The most rows ``create`` sends in one batch (the provider's limit by default).
        max_bytes: The most bytes of one batch: OpenAI's input file, Anthropic's creation request.
    """

    provider: Provider
    endpoints: frozenset[str]

    def __init__(self, *, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes

    def create(self, endpoint: str, rows: Sequence[BatchRow], tag: str) -> str:
        """Send ``rows`` as one batch to ``endpoint``, tagged ``tag`` where the provider keeps tags.

        Args:
            endpoint: The batch endpoint (``/v1/chat/completions``) or papayya's step name for it
                (``openai.chat``, see ``ENDPOINTS``).
            rows: The requests, each with its ``custom_id``.
            tag: papayya's id of the batch (OpenAI ``metadata.papayya_batch``), for ``find``.

        Returns:
            The provider's batch id.

        Raises:
            ValueError: Checked before anything is sent: the endpoint is not this provider's, there
                are no rows or more than ``max_rows`` or ``max_bytes``, a ``custom_id`` is not
                ``[A-Za-z0-9_-]{1,64}`` or repeats, a body names no model (OpenAI: not one model for
                all rows), or the tag is empty or too long.
        """
        endpoint = ENDPOINTS[endpoint][1] if endpoint in ENDPOINTS else endpoint
        if endpoint not in self.endpoints:
            raise ValueError(
                f"{self.provider} batches take {', '.join(sorted(self.endpoints))}, not {endpoint!r}."
            )
        if not 0 < len(tag) <= _TAG_LENGTH:
            raise ValueError(f"A batch tag has 1 to {_TAG_LENGTH} characters; got {len(tag)}.")
        if not rows:
            raise ValueError("A batch needs at least one row; got none.")
        if len(rows) > self.max_rows:
            raise ValueError(
                f"{len(rows)} rows exceed the {self.max_rows} a {self.provider} batch takes; split them."
            )
        seen: set[str] = set()
        for index, row in enumerate(rows):
            if not _CUSTOM_ID.fullmatch(row.custom_id):
                raise ValueError(
                    f"Row {index}'s custom_id {row.custom_id!r} does not match [A-Za-z0-9_-]{{1,64}}."
                )
            if row.custom_id in seen:
                raise ValueError(f"Row {index}'s custom_id {row.custom_id!r} repeats an earlier row's.")
            seen.add(row.custom_id)
            if not isinstance(row.body.get("model"), str):
                raise ValueError(f"Row {row.custom_id!r}'s body names no model.")
        payload = self._encode(endpoint, rows)
        if len(payload) > self.max_bytes:
            raise ValueError(
                f"The batch is {len(payload)} bytes, more than the {self.max_bytes} a {self.provider}"
                " batch takes; split it."
            )
        return self._send(endpoint, rows, tag, payload)

    @abstractmethod
    def _encode(self, endpoint: str, rows: Sequence[BatchRow]) -> bytes:
        """The bytes the provider counts against ``max_bytes``; raise ValueError on a bad row."""

    @abstractmethod
    def _send(self, endpoint: str, rows: Sequence[BatchRow], tag: str, payload: bytes) -> str:
        """Create the batch; its id."""

    @abstractmethod
    def find(self, tag: str, *, rows: int, since: datetime, known: Collection[str]) -> list[str]:
        """The batches that may be the one ``create`` made for ``tag`` before its caller crashed.

        OpenAI: the batches created since ``since`` whose ``metadata.papayya_batch`` is ``tag`` (0 or
        1). Anthropic keeps no tag: the batches created since ``since`` (less 5 s of clock skew) with
        ``rows`` requests, except the ``known`` ids; the caller decides when several match. Pages
        through the provider's list, newest first, and stops at the first batch older than ``since``.

        Args:
            tag: The tag given to ``create``.
            rows: How many rows that batch held.
            since: A moment before ``create`` was called (naive: UTC).
            known: Batch ids papayya has recorded already (used for Anthropic).

        Returns:
            The candidate batch ids, newest first.
        """

    @abstractmethod
    def state(self, batch_id: str) -> BatchState:
        """The batch as the provider reports it now (a read may move the provider's batch on)."""

    @abstractmethod
    def results(self, batch_id: str) -> Iterator[RowResult]:
        """Every row of an ended batch, once each, in no particular order.

        Raises:
            ValueError: The batch has not ended.
        """

    @abstractmethod
    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch; rows answered already keep their results. Cancelling a
        batch that has ended does nothing."""

    @abstractmethod
    def close(self) -> None:
        """Close the SDK client's connections."""


class _OpenAIBatches(BatchClient):
    provider = "openai"
    endpoints = frozenset(e for p, e in ENDPOINTS.values() if p == "openai")

    def __init__(self, sdk: openai.OpenAI, *, max_rows: int = 50_000, max_bytes: int = 200 * MB) -> None:
        super().__init__(max_rows=max_rows, max_bytes=max_bytes)
        self._sdk = sdk

    def _encode(self, endpoint: str, rows: Sequence[BatchRow]) -> bytes:
        models = {row.body["model"] for row in rows}
        if len(models) > 1:
            raise ValueError(f"An OpenAI batch takes one model; these rows name {sorted(models)}.")
        lines = (
            json.dumps(
                {"custom_id": row.custom_id, "method": "POST", "url": endpoint, "body": row.body},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
            for row in rows
        )
        return "".join(lines).encode()

    def _send(self, endpoint: str, rows: Sequence[BatchRow], tag: str, payload: bytes) -> str:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:100]
        upload = self._sdk.files.create(file=(f"papayya-{name}.jsonl", payload), purpose="batch")
        batch = self._sdk.batches.create(
            input_file_id=upload.id,
            endpoint=cast(Any, endpoint),
            completion_window="24h",
            metadata={"papayya_batch": tag},
        )
        return batch.id

    def find(self, tag: str, *, rows: int, since: datetime, known: Collection[str]) -> list[str]:
        cutoff = _utc(since) - _CLOCK_SKEW
        found: list[str] = []
        for batch in self._sdk.batches.list(limit=100):
            if datetime.fromtimestamp(batch.created_at, UTC) < cutoff:
                break
            if (batch.metadata or {}).get("papayya_batch") == tag:
                found.append(batch.id)
        return found

    def state(self, batch_id: str) -> BatchState:
        batch = self._sdk.batches.retrieve(batch_id)
        counts = batch.request_counts
        total = counts.total if counts else 0
        ended = batch.status in _OPENAI_ENDED
        return BatchState(
            provider_status=batch.status,
            ended=ended,
            failed_reason=_rejection(batch) if batch.status == "failed" else None,
            total=total,
            done=total if ended else (counts.completed + counts.failed if counts else 0),
        )

    def results(self, batch_id: str) -> Iterator[RowResult]:
        batch = self._sdk.batches.retrieve(batch_id)
        if batch.status not in _OPENAI_ENDED:
            raise ValueError(
                f"OpenAI batch {batch_id} has not ended ({batch.status}); its results are not ready."
            )
        return self._results(batch)

    def _results(self, batch: openai.types.Batch) -> Iterator[RowResult]:
        inputs = {  # custom_id -> line number
            str(line["custom_id"]): number
            for number, line in self._lines(batch.input_file_id)
            if "custom_id" in line
        }
        if batch.status == "failed":
            yield from _rejected_rows(batch, inputs)
            return
        seen: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            for _, line in self._lines(file_id):
                result = _openai_row(line)
                seen.add(result.custom_id)
                yield result
        for custom_id in inputs:
            if custom_id in seen:
                continue
            if batch.status == "cancelled":
                yield RowResult(custom_id, "canceled", retryable=True)
            elif batch.status == "expired":
                error = (
                    "OpenAI expired this row (batch_expired): the batch's 24h window closed before it ran."
                )
                yield RowResult(custom_id, "expired", error=error, retryable=True)
            else:
                error = f"OpenAI's {batch.status} batch {batch.id} returned no result for this row."
                yield RowResult(custom_id, "errored", error=error, retryable=True)

    def _lines(self, file_id: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
        """The JSON objects of a JSONL file, with their 1-based line numbers (other lines skipped)."""
        if file_id is None:
            return
        with self._sdk.files.with_streaming_response.content(file_id) as response:
            for number, text in enumerate(response.iter_lines(), start=1):
                try:
                    line = json.loads(text) if text.strip() else None
                except ValueError:
                    line = None
                if isinstance(line, dict):
                    yield number, line

    def cancel(self, batch_id: str) -> None:
        import openai

        try:
            self._sdk.batches.cancel(batch_id)
        except openai.ConflictError:  # it has ended, or is ending
            if not self.state(batch_id).ended:
                raise

    def close(self) -> None:
        self._sdk.close()


def _rejection(batch: openai.types.Batch) -> str:
    errors = (batch.errors.data if batch.errors else None) or []
    if not errors:
        return f"OpenAI rejected batch {batch.id} without giving a reason."
    named = [f"{f'line {e.line}: ' if e.line is not None else ''}{e.message} ({e.code})" for e in errors[:5]]
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    return f"OpenAI rejected the batch file: {'; '.join(named)}{more}"


def _rejected_rows(batch: openai.types.Batch, inputs: dict[str, int]) -> Iterator[RowResult]:
    """The rows of a batch OpenAI rejected as a whole: errored, retryable unless their own line was
    at fault."""
    errors = (batch.errors.data if batch.errors else None) or []
    by_line = {e.line: e for e in errors if e.line is not None}
    reason = _rejection(batch)
    for custom_id, number in inputs.items():
        if number in by_line:
            e = by_line[number]
            error = f"OpenAI rejected line {number} of the batch file ({e.code}): {e.message}"
            yield RowResult(custom_id, "errored", error=error, retryable=False)
        else:
            error = f"The row was not run: {reason}"
            yield RowResult(custom_id, "errored", error=error, retryable=True)


def _openai_row(line: dict[str, Any]) -> RowResult:
    """A line of an OpenAI output or error file."""
    custom_id = str(line.get("custom_id"))
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict):
        status, body = response.get("status_code"), response.get("body")
        if status == 200 and isinstance(body, dict):
            return RowResult(custom_id, "succeeded", response=body)
        detail = body.get("error") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        kind = detail.get("type") or detail.get("code") or "error"
        message = detail.get("message") or "no message"
        status = status if isinstance(status, int) else None
        return RowResult(
            custom_id,
            "errored",
            error=f"OpenAI answered {status} {kind}: {message}",
            retryable=_retryable(status),
        )
    detail = error if isinstance(error, dict) else {}
    code, message = detail.get("code") or "error", detail.get("message") or "no message"
    if code == "batch_expired":
        return RowResult(
            custom_id, "expired", error=f"OpenAI expired this row ({code}): {message}", retryable=True
        )
    if code == "batch_cancelled":
        return RowResult(custom_id, "canceled", retryable=True)
    return RowResult(custom_id, "errored", error=f"OpenAI failed this row ({code}): {message}")


class _AnthropicBatches(BatchClient):
    provider = "anthropic"
    endpoints = frozenset({"/v1/messages"})

    def __init__(
        self, sdk: anthropic.Anthropic, *, max_rows: int = 100_000, max_bytes: int = 256 * MB
    ) -> None:
        super().__init__(max_rows=max_rows, max_bytes=max_bytes)
        self._sdk = sdk

    @staticmethod
    def _requests(rows: Sequence[BatchRow]) -> list[dict[str, Any]]:
        return [{"custom_id": row.custom_id, "params": row.body} for row in rows]

    def _encode(self, endpoint: str, rows: Sequence[BatchRow]) -> bytes:
        # Spaced and ASCII-escaped: no smaller than the body the SDK sends, so the check is safe.
        return json.dumps({"requests": self._requests(rows)}).encode()

    def _send(self, endpoint: str, rows: Sequence[BatchRow], tag: str, payload: bytes) -> str:
        return self._sdk.messages.batches.create(requests=cast(Any, self._requests(rows))).id

    def find(self, tag: str, *, rows: int, since: datetime, known: Collection[str]) -> list[str]:
        cutoff = _utc(since) - _CLOCK_SKEW
        found: list[str] = []
        for batch in self._sdk.messages.batches.list(limit=100):
            if _utc(batch.created_at) < cutoff:
                break
            c = batch.request_counts
            size = c.processing + c.succeeded + c.errored + c.canceled + c.expired
            if size == rows and batch.id not in known:
                found.append(batch.id)
        return found

    def state(self, batch_id: str) -> BatchState:
        batch = self._sdk.messages.batches.retrieve(batch_id)
        c = batch.request_counts
        done = c.succeeded + c.errored + c.canceled + c.expired
        return BatchState(
            provider_status=batch.processing_status,
            ended=batch.processing_status == "ended",
            failed_reason=None,  # Anthropic refuses a bad batch at creation, with a 400
            total=c.processing + done,
            done=done,
        )

    def results(self, batch_id: str) -> Iterator[RowResult]:
        batch = self._sdk.messages.batches.retrieve(batch_id)
        if batch.processing_status != "ended":
            raise ValueError(
                f"Anthropic batch {batch_id} has not ended ({batch.processing_status});"
                " its results are not ready."
            )
        return self._results(batch_id)

    def _results(self, batch_id: str) -> Iterator[RowResult]:
        # The raw lines, not the SDK's models: a succeeded row's message stays the exact JSON.
        with self._sdk.messages.batches.with_streaming_response.results(batch_id) as response:
            for text in response.iter_lines():
                if text.strip():
                    yield _anthropic_row(json.loads(text))

    def cancel(self, batch_id: str) -> None:
        import anthropic

        try:
            self._sdk.messages.batches.cancel(batch_id)
        except anthropic.BadRequestError:  # it has ended
            if not self.state(batch_id).ended:
                raise

    def close(self) -> None:
        self._sdk.close()


def _anthropic_row(line: dict[str, Any]) -> RowResult:
    """A line of an Anthropic results stream."""
    custom_id = str(line.get("custom_id"))
    result: dict[str, Any] = line["result"] if isinstance(line.get("result"), dict) else {}
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        return RowResult(custom_id, "succeeded", response=result["message"])
    if kind == "expired":
        error = "Anthropic expired this row (expired): the batch's 24-hour window closed before it ran."
        return RowResult(custom_id, "expired", error=error, retryable=True)
    if kind == "canceled":
        return RowResult(custom_id, "canceled", retryable=True)
    body: dict[str, Any] = result["error"] if isinstance(result.get("error"), dict) else {}
    # {"type": "error", "error": {"type", "message"}}
    detail: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
    error_type = str(detail.get("type") or "error")
    status = _ANTHROPIC_STATUS.get(error_type)
    message = detail.get("message") or "no message"
    return RowResult(
        custom_id,
        "errored",
        error=f"Anthropic answered {status if status else 'an error'} {error_type}: {message}",
        retryable=_retryable(status),
    )


def client_for(provider: Provider, *, base_url: str | None, api_key: str | None = None) -> BatchClient:
    """A batch client for one provider account.

    Args:
        provider: ``"openai"`` or ``"anthropic"``.
        base_url: The API's base URL (OpenAI's ends in ``/v1``); None for the SDK's default.
        api_key: The key; None reads the SDK's own variable (``OPENAI_API_KEY``,
            ``ANTHROPIC_API_KEY``).

    Returns:
        A ``BatchClient`` over a plain SDK client (2 retries, a 120 s timeout).

    Raises:
        ConfigError: The provider is unknown, its SDK is not installed, or no API key is given or set.
    """
    if provider not in ("openai", "anthropic"):
        raise ConfigError(f"Unknown batch provider {provider!r}; papayya batches 'openai' or 'anthropic'.")
    variable = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    key = api_key if api_key is not None else os.environ.get(variable)
    try:
        if provider == "openai":
            import openai

            if not key:
                raise ConfigError(f"No OpenAI API key for batch mode: pass api_key or set {variable}.")
            timeout = openai.Timeout(_TIMEOUT, connect=_CONNECT_TIMEOUT)
            sdk = openai.OpenAI(api_key=key, base_url=base_url, max_retries=_MAX_RETRIES, timeout=timeout)
            return _OpenAIBatches(sdk)
        import anthropic

        if not key:
            raise ConfigError(f"No Anthropic API key for batch mode: pass api_key or set {variable}.")
        timeout = anthropic.Timeout(_TIMEOUT, connect=_CONNECT_TIMEOUT)
        client = anthropic.Anthropic(
            api_key=key, base_url=base_url, max_retries=_MAX_RETRIES, timeout=timeout
        )
        return _AnthropicBatches(client)
    except ImportError:
        raise ConfigError(
            f"Batch mode with {provider} needs its SDK: pip install 'papayya[{provider}]'."
        ) from None
