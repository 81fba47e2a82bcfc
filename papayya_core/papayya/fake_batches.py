"""The provider batch APIs of ``papayya.testing.FakeProvider``: OpenAI Files + Batch and Anthropic
Message Batches, well enough for the real ``openai`` and ``anthropic`` clients.

**OpenAI** (``client.files.create/retrieve/content/delete``, ``client.batches.create/retrieve/list/
cancel``): ``POST /v1/files`` takes a ``multipart/form-data`` upload (``file``, ``purpose``);
``POST /v1/batches`` takes its ``input_file_id``, an ``endpoint`` (``/v1/chat/completions``,
``/v1/responses`` or ``/v1/embeddings``), ``completion_window`` ``"24h"`` and ``metadata``. The file
is validated as OpenAI does, line by line: a line that is not a JSON object (``invalid_json_line``),
lacks ``custom_id``/``method``/``url``/``body`` (``missing_required_parameter``), is not a ``POST``
(``invalid_method``), has a ``url`` other than the batch's endpoint (``invalid_url``), repeats a
``custom_id`` (``duplicate_custom_id``), names another model than the first line
(``mismatched_model``), or a file with no request (``empty_file``), more requests than the limit
(``too_many_requests``) or more bytes (``file_too_large``): the batch answers ``validating`` and is
``failed`` at its next read, with ``errors.data`` ``[{code, message, param, line}]`` (``line`` 1-based,
None for the whole file's errors), no row answered and nothing billed. A valid batch answers
``validating``, then ``in_progress`` until it completes: ``completed``, or ``expired`` when every row
expired. Then its ``output_file_id`` holds the rows answered 200 (``{"id": "batch_req_...",
"custom_id", "response": {"status_code": 200, "request_id", "body": <the live endpoint's body>},
"error": null}``) and its ``error_file_id`` the errored rows (the same, with their status and error
body) and the expired ones (``{"custom_id", "response": null, "error": {"code": "batch_expired",
"message"}}``); either is None when it would be empty. ``request_counts``: ``completed`` counts the
rows answered 200, ``failed`` the errored and expired ones. ``cancel`` answers ``cancelling``; the
next read says ``cancelled``, with the rows answered before the cancel in the files and counts, the
others nowhere. Cancelling a batch that has ended is a 409.

**Anthropic** (``client.messages.batches.create/retrieve/list/cancel/results/delete``):
``POST /v1/messages/batches`` takes ``requests`` ``[{custom_id, params}]``; a ``custom_id`` that does not
match ``^[a-zA-Z0-9_-]{1,64}$`` or repeats one, a request without ``params``, or more requests than
the limit is a 400 ``invalid_request_error`` naming it, and a body over the size limit a 413. The
batch is ``in_progress`` (``request_counts.processing`` = every row) until it ``ended``; its
``results_url`` then gives one JSON line per row: ``succeeded`` with the ``message``, ``errored`` with
the error body (``{"type": "error", "error": {"type", "message"}}``), ``canceled`` or ``expired``.
``cancel`` answers ``canceling``; the next read says ``ended``, the unanswered rows ``canceled``.

**Rows** are answered when their batch completes, not when it is created, each by the same machinery
as a live request to the row's endpoint: the ``fail()``/``stop_with()``/``expire()`` rules (with
their ``when=`` and ``times=``), then the ``reply`` hook, then the request's ``max_tokens``. Each
answered row is in ``fake.requests`` (``batch_id`` and ``custom_id`` set) and each row answered 200 is
billed at the batch rate (``BillEntry.mode`` ``"batch"``). A row that expired or was canceled was never
answered: it is not in ``fake.requests`` and not billed. A row asking for ``"stream": true`` is
errored (400) without being answered, as the providers batch no streams. ``fail()`` rules apply to the
rows, never to the files and batches endpoints themselves.

**Time.** A batch completes at the first read of any batch (a retrieve, a list, Anthropic's results)
once ``fake.batch_delay`` seconds have passed since its creation (default 0: the first read after
creation completes it) and batches are not held (``fake.hold_batches()`` until
``fake.release_batches()``). ``fake.finish_batches()`` completes every open batch now, held or not;
``fake.advance_batches(rows)`` answers the next ``rows`` rows of each open batch without completing
it, so a cancel can land mid-batch. ``fake.batches`` lists ``BatchSnapshot``s for assertions, without
completing anything; ``fake.batch_limits`` (``BatchLimits``) can be set to force small limits.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = ["BatchControls", "BatchLimits", "BatchSnapshot", "BatchStore", "parse_multipart"]

MB = 1024 * 1024
_DAY = 24 * 3600  # both providers' completion window
_OPENAI_ENDPOINTS = {
    "/v1/chat/completions": "openai.chat",
    "/v1/responses": "openai.responses",
    "/v1/embeddings": "openai.embeddings",
}
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."

# (api, body, batch id, custom id) -> (HTTP status, answer body), or None when an expire() rule took it.
RowAnswerer = Callable[[str, dict[str, Any], str, str], "tuple[int, Any] | None"]
# A routed answer: status, extra headers (a "content-type" one for raw bytes), body.
Answer = tuple[int, dict[str, str], Any]
Provider = Literal["openai", "anthropic"]
Outcome = Literal["succeeded", "errored", "expired", "canceled"]


@dataclass(frozen=True)
class BatchLimits:
    """The most requests and bytes one batch may hold (the providers' published limits by default).

    Attributes:
        openai_requests: Requests per OpenAI batch input file.
        openai_bytes: Bytes per OpenAI batch input file.
        anthropic_requests: Requests per Anthropic Message Batch.
        anthropic_bytes: Bytes of one Message Batch creation request.
    """

    openai_requests: int = 50_000
    openai_bytes: int = 200 * MB
    anthropic_requests: int = 100_000
    anthropic_bytes: int = 256 * MB


@dataclass(frozen=True)
class BatchSnapshot:
    """One batch as the fake holds it, for a test's assertions.

    Attributes:
        id: ``batch_...`` (OpenAI) or ``msgbatch_...`` (Anthropic).
        provider: ``"openai"`` or ``"anthropic"``.
        endpoint: The endpoint its rows go to (Anthropic: ``"/v1/messages"``).
        model: The model every row asks for; None when rows ask for several (Anthropic allows it).
        status: In the provider's spelling: OpenAI's ``status`` (``in_progress``, ``completed``,
            ``failed``, ``expired``, ``cancelling``, ``cancelled``), Anthropic's ``processing_status``
            (``in_progress``, ``canceling``, ``ended``).
        rows: How many requests it holds (0 for a file that failed validation).
        counts: Rows per outcome so far: ``succeeded``, ``errored``, ``expired``, ``canceled``.
        metadata: OpenAI's ``metadata`` (empty for Anthropic).
        created_at: Unix time of its creation.
        ended_at: Unix time it ended (completed, failed, expired or cancelled), else None.
    """

    id: str
    provider: Provider
    endpoint: str
    model: str | None
    status: str
    rows: int
    counts: dict[str, int]
    metadata: dict[str, str]
    created_at: float
    ended_at: float | None


@dataclass
class _Row:
    line: int  # 1-based: the line of the OpenAI file, the position in Anthropic's ``requests``
    custom_id: str
    api: str
    body: dict[str, Any]
    state: Literal["pending", "claimed"] | Outcome = "pending"
    status: int = 0  # the HTTP status it was answered with
    payload: Any = None  # the answer's body: a response or an error body


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class _Batch:
    id: str
    provider: Provider
    endpoint: str
    rows: list[_Row]
    created_at: float  # time.time(), for the timestamps a client reads
    started: float  # time.monotonic(), for batch_delay
    metadata: dict[str, str] = field(default_factory=dict)
    input_file_id: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)  # OpenAI validation: the batch failed
    phase: Literal["open", "cancelling", "ended"] = "open"
    finishing: bool = False  # a thread is answering its rows outside the store's lock
    cancelled_at: float | None = None
    ended_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def model(self) -> str | None:
        models = {str(r.body.get("model") or "") for r in self.rows}
        return models.pop() if len(models) == 1 else None

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.rows if r.state == outcome)

    @property
    def status(self) -> str:
        if self.provider == "anthropic":
            return {"open": "in_progress", "cancelling": "canceling", "ended": "ended"}[self.phase]
        if self.errors:
            return "failed"
        if self.phase == "open":
            return "finalizing" if self.finishing else "in_progress"
        if self.phase == "cancelling":
            return "cancelling"
        if self.cancelled_at is not None:
            return "cancelled"
        return "expired" if all(r.state == "expired" for r in self.rows) else "completed"


def parse_multipart(content_type: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (file name or None, content).

    Raises:
        ValueError: The body is not multipart.
    """
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
    if not message.is_multipart():
        raise ValueError("the body is not multipart/form-data")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.get_payload():
        if not isinstance(part, email.message.Message):
            continue
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _iso(timestamp: float | None) -> str | None:
    """RFC 3339, as Anthropic writes its timestamps."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _openai_error(status: int, message: str, param: str | None = None) -> Answer:
    kind = "invalid_request_error"
    return status, {}, {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _anthropic_error(status: int, message: str) -> Answer:
    kind = {404: "not_found_error", 413: "request_too_large"}.get(status, "invalid_request_error")
    return status, {}, {"type": "error", "error": {"type": kind, "message": message}}


def _raw(data: bytes, content_type: str) -> Answer:
    return 200, {"content-type": content_type}, data


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("POST", r"/v1/files", "upload"),
        ("GET", r"/v1/files/(?P<id>[^/]+)", "file"),
        ("DELETE", r"/v1/files/(?P<id>[^/]+)", "delete_file"),
        ("GET", r"/v1/files/(?P<id>[^/]+)/content", "file_content"),
        ("POST", r"/v1/batches", "openai_create"),
        ("GET", r"/v1/batches", "openai_list"),
        ("GET", r"/v1/batches/(?P<id>[^/]+)", "openai_retrieve"),
        ("POST", r"/v1/batches/(?P<id>[^/]+)/cancel", "openai_cancel"),
        ("POST", r"/v1/messages/batches", "anthropic_create"),
        ("GET", r"/v1/messages/batches", "anthropic_list"),
        ("GET", r"/v1/messages/batches/(?P<id>[^/]+)", "anthropic_retrieve"),
        ("DELETE", r"/v1/messages/batches/(?P<id>[^/]+)", "anthropic_delete"),
        ("POST", r"/v1/messages/batches/(?P<id>[^/]+)/cancel", "anthropic_cancel"),
        ("GET", r"/v1/messages/batches/(?P<id>[^/]+)/results", "anthropic_results"),
    ]
]


class BatchStore:
    """The files and batches of one fake provider, and the HTTP routes that reach them.

    Rows are answered through ``answer`` outside the store's lock, so a ``when`` predicate or a
    ``reply`` hook may read ``fake.batches``.
    """

    def __init__(self, answer: RowAnswerer) -> None:
        self._answer = answer
        self._lock = threading.RLock()
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}  # oldest first
        self._numbers = 0
        # Batch ids of one fake differ from another's (as a real provider's are random): two fakes in one
        # store must not hand out the same id.
        self._salt = uuid.uuid4().hex[:8]
        self.delay = 0.0
        self.held = False
        self.limits = BatchLimits()

    def clear(self) -> None:
        """Forget every file and batch (the delay, hold and limits are kept)."""
        with self._lock:
            self._files.clear()
            self._batches.clear()

    def _next(self) -> int:
        with self._lock:
            self._numbers += 1
            return self._numbers

    # -- routing ----------------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes, base_url: str
    ) -> Answer | None:
        """Answer a request to a batch route; None when ``target`` is not one (a live endpoint)."""
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        for route_method, pattern, name in _ROUTES:
            found = pattern.fullmatch(parts.path)
            if found is None or route_method != method:
                continue
            anthropic = name.startswith("anthropic")
            try:
                data: Any = json.loads(body or b"{}") if method == "POST" and name != "upload" else {}
            except ValueError:
                data = None
            if not isinstance(data, dict):
                message = "the body is not a JSON object"
                return _anthropic_error(400, message) if anthropic else _openai_error(400, message)
            handler = getattr(self, f"_{name}")
            args = {"id": found["id"]} if "id" in found.groupdict() else {}
            result: Answer = handler(
                **args, data=data, query=query, headers=headers, body=body, base_url=base_url
            )
            return result
        if any(pattern.fullmatch(parts.path) for _, pattern, _ in _ROUTES):
            return (
                405,
                {},
                {
                    "error": {
                        "message": f"{method} is not allowed on {parts.path}",
                        "type": "invalid_request_error",
                    }
                },
            )
        return None

    # -- OpenAI files -----------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], body: bytes, **_: Any) -> Answer:
        try:
            fields = parse_multipart(headers.get("content-type", ""), body)
        except ValueError as exc:
            return _openai_error(400, str(exc))
        if "file" not in fields or "purpose" not in fields:
            return _openai_error(
                400, "file and purpose are required", "file" if "file" not in fields else "purpose"
            )
        filename, data = fields["file"]
        file = _File(
            f"file-fake{self._next()}",
            filename or "upload",
            fields["purpose"][1].decode(),
            data,
            int(time.time()),
        )
        with self._lock:
            self._files[file.id] = file
        return 200, {}, file.view()

    def _file(self, id: str, **_: Any) -> Answer:
        with self._lock:
            file = self._files.get(id)
        return (200, {}, file.view()) if file else _openai_error(404, f"No such File object: {id}", "id")

    def _file_content(self, id: str, **_: Any) -> Answer:
        with self._lock:
            file = self._files.get(id)
        return (
            _raw(file.data, "application/octet-stream")
            if file
            else _openai_error(404, f"No such File object: {id}", "id")
        )

    def _delete_file(self, id: str, **_: Any) -> Answer:
        with self._lock:
            file = self._files.pop(id, None)
        if file is None:
            return _openai_error(404, f"No such File object: {id}", "id")
        return 200, {}, {"id": id, "object": "file", "deleted": True}

    # -- OpenAI batches ---------------------------------------------------------------------------

    def _openai_create(self, data: dict[str, Any], **_: Any) -> Answer:
        endpoint, file_id = data.get("endpoint"), data.get("input_file_id")
        if endpoint not in _OPENAI_ENDPOINTS:
            supported = ", ".join(_OPENAI_ENDPOINTS)
            return _openai_error(
                400, f"endpoint {endpoint!r} is not supported by the fake ({supported})", "endpoint"
            )
        if data.get("completion_window") != "24h":
            return _openai_error(400, "completion_window must be '24h'", "completion_window")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            return _openai_error(400, "metadata must be an object", "metadata")
        with self._lock:
            file = self._files.get(str(file_id))
        if file is None:
            return _openai_error(404, f"No such File object: {file_id}", "input_file_id")
        if file.purpose != "batch":
            return _openai_error(
                400, f"file {file.id} has purpose {file.purpose!r}, not 'batch'", "input_file_id"
            )
        rows, errors = _openai_rows(file.data, str(endpoint), self.limits)
        batch = _Batch(
            id=f"batch_fake{self._next()}_{self._salt}",
            provider="openai",
            endpoint=str(endpoint),
            rows=[] if errors else rows,
            created_at=time.time(),
            started=time.monotonic(),
            metadata={str(k): str(v) for k, v in metadata.items()},
            input_file_id=file.id,
            errors=errors,
        )
        if errors:  # a rejected file: nothing runs; the batch reads "failed" from now on
            batch.phase, batch.ended_at = "ended", batch.created_at
        with self._lock:
            self._batches[batch.id] = batch
            view = self._openai_view(batch)
        return 200, {}, {**view, "status": "validating", "errors": None, "failed_at": None}

    def _openai_retrieve(self, id: str, **_: Any) -> Answer:
        self.progress()
        with self._lock:
            batch = self._batches.get(id)
            if batch is None or batch.provider != "openai":
                return _openai_error(404, f"No such Batch object: {id}", "id")
            return 200, {}, self._openai_view(batch)

    def _openai_list(self, query: dict[str, str], **_: Any) -> Answer:
        self.progress()
        with self._lock:
            views = [self._openai_view(b) for b in reversed(self._batches.values()) if b.provider == "openai"]
        page, more = _page(views, query.get("after"), None, query.get("limit"))
        first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
        return 200, {}, {"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": more}

    def _openai_cancel(self, id: str, **_: Any) -> Answer:
        with self._lock:
            batch = self._batches.get(id)
            if batch is None or batch.provider != "openai":
                return _openai_error(404, f"No such Batch object: {id}", "id")
            if batch.phase == "ended":
                return _openai_error(409, f"Cannot cancel a batch with status '{batch.status}'.")
            self._cancel(batch)
            return 200, {}, self._openai_view(batch)

    def _openai_view(self, b: _Batch) -> dict[str, Any]:
        created, ended, status = int(b.created_at), _int(b.ended_at), b.status
        done = status in ("completed", "expired")
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": created,
            "in_progress_at": None if b.errors else created,
            "expires_at": created + _DAY,
            "finalizing_at": ended if done else None,
            "completed_at": ended if status == "completed" else None,
            "failed_at": ended if status == "failed" else None,
            "expired_at": ended if status == "expired" else None,
            "cancelling_at": _int(b.cancelled_at),
            "cancelled_at": ended if status == "cancelled" else None,
            "request_counts": {
                "total": len(b.rows),
                "completed": b.count("succeeded"),
                "failed": b.count("errored") + b.count("expired"),
            },
            "metadata": b.metadata or None,
        }

    def _openai_files(self, b: _Batch) -> None:
        """Write the output and error files of an OpenAI batch that has just ended."""
        output: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for row in b.rows:
            line: dict[str, Any] = {
                "id": f"batch_req_{b.id.removeprefix('batch_')}_{row.line}",
                "custom_id": row.custom_id,
            }
            if row.state == "expired":
                failed.append(
                    {
                        **line,
                        "response": None,
                        "error": {"code": "batch_expired", "message": _EXPIRED_MESSAGE},
                    }
                )
            elif row.state in ("succeeded", "errored"):
                response = {
                    "status_code": row.status,
                    "request_id": f"req_fake_{b.id}_{row.line}",
                    "body": row.payload,
                }
                (output if row.state == "succeeded" else failed).append(
                    {**line, "response": response, "error": None}
                )
        for lines, kind in ((output, "output"), (failed, "error")):
            if not lines:
                continue
            file = _File(
                f"file-fake{self._next()}",
                f"{b.id}_{kind}.jsonl",
                "batch_output",
                _jsonl(lines),
                int(time.time()),
            )
            self._files[file.id] = file
            if kind == "output":
                b.output_file_id = file.id
            else:
                b.error_file_id = file.id

    # -- Anthropic Message Batches ----------------------------------------------------------------

    def _anthropic_create(self, data: dict[str, Any], body: bytes, base_url: str, **_: Any) -> Answer:
        limits = self.limits
        if len(body) > limits.anthropic_bytes:
            return _anthropic_error(
                413, f"the request is {len(body)} bytes; a batch takes at most {limits.anthropic_bytes}"
            )
        requests = data.get("requests")
        if not isinstance(requests, list) or not requests:
            return _anthropic_error(400, "requests: a non-empty list of {custom_id, params} is required")
        if len(requests) > limits.anthropic_requests:
            return _anthropic_error(
                400, f"requests: {len(requests)} requests; a batch takes at most {limits.anthropic_requests}"
            )
        rows: list[_Row] = []
        seen: dict[str, int] = {}
        for index, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            params = request.get("params") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                return _anthropic_error(
                    400, f"requests.{index}.custom_id: {custom_id!r} does not match ^[a-zA-Z0-9_-]{{1,64}}$"
                )
            if custom_id in seen:
                return _anthropic_error(
                    400,
                    f"requests.{index}.custom_id: {custom_id!r} is already used by"
                    f" requests.{seen[custom_id]}; custom_id must be unique within a batch",
                )
            if not isinstance(params, dict):
                return _anthropic_error(
                    400, f"requests.{index}.params: an object is required (custom_id {custom_id!r})"
                )
            seen[custom_id] = index
            rows.append(_Row(index + 1, custom_id, "anthropic.messages", params))
        batch = _Batch(
            f"msgbatch_fake{self._next()}_{self._salt}",
            "anthropic",
            "/v1/messages",
            rows,
            time.time(),
            time.monotonic(),
        )
        with self._lock:
            self._batches[batch.id] = batch
            return 200, {}, self._anthropic_view(batch, base_url)

    def _anthropic_retrieve(self, id: str, base_url: str, **_: Any) -> Answer:
        self.progress()
        with self._lock:
            batch = self._batches.get(id)
            if batch is None or batch.provider != "anthropic":
                return _anthropic_error(404, f"message batch {id} not found")
            return 200, {}, self._anthropic_view(batch, base_url)

    def _anthropic_list(self, query: dict[str, str], base_url: str, **_: Any) -> Answer:
        self.progress()
        with self._lock:
            views = [
                self._anthropic_view(b, base_url)
                for b in reversed(self._batches.values())
                if b.provider == "anthropic"
            ]
        page, more = _page(views, query.get("after_id"), query.get("before_id"), query.get("limit"))
        first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
        return 200, {}, {"data": page, "has_more": more, "first_id": first, "last_id": last}

    def _anthropic_cancel(self, id: str, base_url: str, **_: Any) -> Answer:
        with self._lock:
            batch = self._batches.get(id)
            if batch is None or batch.provider != "anthropic":
                return _anthropic_error(404, f"message batch {id} not found")
            if batch.phase == "ended":
                return _anthropic_error(400, f"message batch {id} has ended and cannot be canceled")
            self._cancel(batch)
            return 200, {}, self._anthropic_view(batch, base_url)

    def _anthropic_delete(self, id: str, **_: Any) -> Answer:
        with self._lock:
            batch = self._batches.get(id)
            if batch is None or batch.provider != "anthropic":
                return _anthropic_error(404, f"message batch {id} not found")
            if batch.phase != "ended":
                return _anthropic_error(400, f"message batch {id} is still processing; cancel it first")
            del self._batches[id]
        return 200, {}, {"id": id, "type": "message_batch_deleted"}

    def _anthropic_results(self, id: str, **_: Any) -> Answer:
        self.progress()
        with self._lock:
            batch = self._batches.get(id)
            if batch is None or batch.provider != "anthropic":
                return _anthropic_error(404, f"message batch {id} not found")
            if batch.phase != "ended":
                return _anthropic_error(400, f"message batch {id} has not ended; its results are not ready")
            lines = [{"custom_id": r.custom_id, "result": _anthropic_result(r)} for r in batch.rows]
        return _raw(_jsonl(lines), "application/binary")

    def _anthropic_view(self, b: _Batch, base_url: str) -> dict[str, Any]:
        ended = b.phase == "ended"
        counts = {o: b.count(o) if ended else 0 for o in ("succeeded", "errored", "canceled", "expired")}
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": b.status,
            # As Anthropic counts: a row is "processing" until the whole batch ends.
            "request_counts": {"processing": 0 if ended else len(b.rows), **counts},
            "created_at": _iso(b.created_at),
            "expires_at": _iso(b.created_at + _DAY),
            "ended_at": _iso(b.ended_at),
            "cancel_initiated_at": _iso(b.cancelled_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{b.id}/results" if ended else None,
        }

    # -- progress ---------------------------------------------------------------------------------

    def _cancel(self, batch: _Batch) -> None:
        batch.phase, batch.cancelled_at = "cancelling", time.time()

    def progress(self, *, force: bool = False, rows: int | None = None) -> None:
        """Move the batches on, as a client's read does: end the cancelling ones; answer the rows of
        the open ones that are due (``batch_delay`` passed and not held, or ``force``) and end them.
        With ``rows``, answer at most that many rows of each open batch and end none."""
        now = time.monotonic()
        claimed: list[tuple[_Batch, list[_Row]]] = []
        with self._lock:
            for batch in self._batches.values():
                if batch.finishing:
                    continue  # another thread is answering its rows; it ends it
                if batch.phase == "cancelling" and rows is None:
                    self._end(batch)
                elif batch.phase == "open" and (
                    force or (not self.held and now - batch.started >= self.delay)
                ):
                    pending = [r for r in batch.rows if r.state == "pending"][:rows]
                    for row in pending:
                        row.state = "claimed"
                    batch.finishing = True
                    claimed.append((batch, pending))
        for batch, pending in claimed:
            try:
                for row in pending:
                    self._answer_row(batch, row)
            finally:
                with self._lock:
                    batch.finishing = False
                    for row in pending:  # rows an exception left unanswered go back
                        if row.state == "claimed":
                            row.state = "pending"
                    if rows is None or batch.phase == "cancelling":
                        self._end(batch)

    def _answer_row(self, batch: _Batch, row: _Row) -> None:
        answer: tuple[int, Any] | None
        if row.body.get("stream") is True:  # neither provider batches a stream; nothing is answered
            message = "stream is not supported in a batch"
            status, _, error = (
                _anthropic_error(400, message)
                if batch.provider == "anthropic"
                else _openai_error(400, message, "stream")
            )
            answer = status, error
        else:
            answer = self._answer(row.api, row.body, batch.id, row.custom_id)
        with self._lock:
            if answer is None:
                row.state = "expired"
            else:
                row.status, row.payload = answer
                row.state = "succeeded" if row.status == 200 else "errored"

    def _end(self, batch: _Batch) -> None:
        """End an open or cancelling batch (the store's lock held): its unanswered rows are canceled."""
        for row in batch.rows:
            if row.state in ("pending", "claimed"):
                row.state = "canceled"
        batch.phase, batch.ended_at = "ended", time.time()
        if batch.provider == "openai":
            self._openai_files(batch)

    def snapshots(self) -> list[BatchSnapshot]:
        with self._lock:
            return [
                BatchSnapshot(
                    id=b.id,
                    provider=b.provider,
                    endpoint=b.endpoint,
                    model=b.model,
                    status=b.status,
                    rows=len(b.rows),
                    counts={o: b.count(o) for o in ("succeeded", "errored", "expired", "canceled")},
                    metadata=dict(b.metadata),
                    created_at=b.created_at,
                    ended_at=b.ended_at,
                )
                for b in self._batches.values()
            ]


def _int(timestamp: float | None) -> int | None:
    return None if timestamp is None else int(timestamp)


def _anthropic_result(row: _Row) -> dict[str, Any]:
    if row.state == "succeeded":
        return {"type": "succeeded", "message": row.payload}
    if row.state == "errored":
        return {"type": "errored", "error": row.payload}
    return {"type": row.state}  # "canceled" or "expired"


def _page(
    items: list[dict[str, Any]], after: str | None, before: str | None, limit: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """A page of ``items`` (newest first) after or before the one with that id; and whether more
    follow in that direction."""
    size = max(1, min(100, int(limit))) if limit and limit.isdigit() else 20
    ids = [item["id"] for item in items]
    if before is not None:
        end = ids.index(before) if before in ids else 0
        return items[max(0, end - size) : end], end - size > 0
    start = ids.index(after) + 1 if after in ids else 0
    return items[start : start + size], start + size < len(items)


def _openai_rows(data: bytes, endpoint: str, limits: BatchLimits) -> tuple[list[_Row], list[dict[str, Any]]]:
    """The rows of an OpenAI batch input file, and what is wrong with it (empty when valid)."""
    errors: list[dict[str, Any]] = []

    def error(code: str, message: str, line: int | None, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": line})

    if len(data) > limits.openai_bytes:
        error(
            "file_too_large",
            f"The batch input file is {len(data)} bytes; the most is {limits.openai_bytes}.",
            None,
        )
    rows: list[_Row] = []
    seen: set[str] = set()
    model: str | None = None
    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            error("invalid_json_line", "This line is not a valid JSON object.", number)
            continue
        missing = [name for name in ("custom_id", "method", "url", "body") if name not in request]
        if missing:
            error(
                "missing_required_parameter",
                f"Missing required parameter: {missing[0]!r}.",
                number,
                missing[0],
            )
            continue
        custom_id, body = str(request["custom_id"]), request["body"]
        if request["method"] != "POST":
            error(
                "invalid_method",
                f"The method {request['method']!r} is not supported; use 'POST'.",
                number,
                "method",
            )
        elif request["url"] != endpoint:
            error(
                "invalid_url",
                f"The url {request['url']!r} does not match the batch's endpoint {endpoint!r}.",
                number,
                "url",
            )
        elif custom_id in seen:
            error(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is used by an earlier line.",
                number,
                "custom_id",
            )
        elif not isinstance(body, dict) or not body.get("model"):
            error(
                "missing_required_parameter",
                "Missing required parameter: 'body.model'.",
                number,
                "body.model",
            )
        elif model is not None and body["model"] != model:
            error(
                "mismatched_model",
                f"The model {body['model']!r} differs from {model!r}; a batch takes one model.",
                number,
                "body.model",
            )
        else:
            model = model or str(body["model"])
            rows.append(_Row(number, custom_id, _OPENAI_ENDPOINTS[endpoint], body))
        seen.add(custom_id)
    if not rows and not errors:
        error("empty_file", "The batch input file holds no request.", None)
    if len(rows) > limits.openai_requests:
        error(
            "too_many_requests",
            f"The batch input file holds {len(rows)} requests; the most is {limits.openai_requests}.",
            None,
        )
    return rows, errors


class BatchControls:
    """The batch controls of ``FakeProvider`` (its base class; see this module's docstring)."""

    _batch_store: BatchStore

    @property
    def batch_delay(self) -> float:
        """Seconds from a batch's creation until a read completes it (0: the first read does)."""
        return self._batch_store.delay

    @batch_delay.setter
    def batch_delay(self, seconds: float) -> None:
        self._batch_store.delay = seconds

    @property
    def batch_limits(self) -> BatchLimits:
        """The most requests and bytes a batch may hold; set a smaller ``BatchLimits`` to test them."""
        return self._batch_store.limits

    @batch_limits.setter
    def batch_limits(self, limits: BatchLimits) -> None:
        self._batch_store.limits = limits

    def hold_batches(self) -> None:
        """Complete no batch, however long ago it was created, until ``release_batches()``."""
        self._batch_store.held = True

    def release_batches(self) -> None:
        """Let reads complete the batches that are due again."""
        self._batch_store.held = False

    def finish_batches(self) -> None:
        """Complete every open batch now (held or not, whatever ``batch_delay``), answering its rows,
        and end the cancelled ones."""
        self._batch_store.progress(force=True)

    def advance_batches(self, rows: int = 1) -> None:
        """Answer the next ``rows`` rows of every open batch without completing it (held or not)."""
        self._batch_store.progress(force=True, rows=rows)

    @property
    def batches(self) -> list[BatchSnapshot]:
        """Every batch created so far, oldest first (reading it completes nothing)."""
        return self._batch_store.snapshots()
