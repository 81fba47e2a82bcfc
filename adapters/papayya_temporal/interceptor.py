"""``Interceptor``: one object that is both a Temporal client and worker interceptor.

- client: stamps the ``papayya`` header (tenant, run, item ids) from the current stamp on workflow
  starts, signals, queries, updates and standalone activities;
- workflow: restores the stamp from the header when a workflow (or a signal, query, update handler)
  runs, and stamps every activity, local activity, child workflow and signal it sends;
- activity: restores the stamp; an activity that is a papayya agent and carries an item stamp runs
  as an attempt of that item through papayya's one lifecycle (``papayya_temporal.activity``).

The trace context travels the same way, in a ``papayya-trace`` header (W3C ``traceparent``,
``tracestate``, ``baggage`` as JSON, written only with OpenTelemetry installed and a span current):
the client writes it on workflow starts, signals and standalone activities; a workflow copies what it
was started with onto its activities and child workflows (unchanged: deterministic); an activity runs
inside it, so its ``papayya.attempt`` span is a child of the span that called ``map()`` or started
the workflow.

Each call takes Temporal's input dataclass and hands it to ``self.next``, so new SDK fields never
break this chain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

import temporalio.client
import temporalio.worker
from temporalio import workflow
from temporalio.api.common.v1 import Payload

from papayya_otel import propagation as trace_context
from papayya_temporal import headers as _headers
from papayya_temporal.headers import Stamp, current_stamp

TRACE_HEADER = "papayya-trace"


def _outgoing() -> Stamp | None:
    """What to stamp on a call leaving this context: the papayya_temporal stamp, else the tenant and
    run of the papayya attempt in progress (an agent starting a workflow), else nothing."""
    stamp = current_stamp.get()
    if stamp is not None:
        return stamp
    from papayya_temporal.activity import attempt_stamp

    return attempt_stamp()


def _with_trace(headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
    """``headers`` with the current trace context added (unchanged without one, or when it has one)."""
    if TRACE_HEADER in headers:
        return headers
    carried = {k: v for k, v in trace_context.inject({}).items() if isinstance(v, str)}
    if not carried:
        return headers
    text = json.dumps(carried, separators=(",", ":"), sort_keys=True)
    return {**headers, TRACE_HEADER: Payload(metadata={"encoding": b"json/plain"}, data=text.encode())}


def _trace_of(headers: Mapping[str, Payload]) -> dict[str, str]:
    """The trace context carried in ``headers`` (empty when none, or unreadable)."""
    payload = headers.get(TRACE_HEADER)
    if payload is None:
        return {}
    try:
        data = json.loads(payload.data)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


class Interceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """papayya for Temporal: give it to ``Client.connect(..., interceptors=[...])``; workers built on
    that client use it too.

    Example::

        client = await Client.connect("localhost:7233", interceptors=[papayya_temporal.Interceptor()])
        worker = Worker(client, task_queue="enrich", workflows=[...], activities=[enrich_activity])
    """

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        from papayya_temporal.activity import ActivityInbound

        return _TracedActivity(ActivityInbound(next))

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[temporalio.worker.WorkflowInboundInterceptor] | None:
        return _WorkflowInbound


class TraceContext(temporalio.client.Interceptor):
    """A client interceptor that only writes the ``papayya-trace`` header (papayya's own client, which
    starts and signals ``MapItems`` workflows, uses it; ``Interceptor`` does this too)."""

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _TraceOutbound(next)


class _TraceOutbound(temporalio.client.OutboundInterceptor):
    async def start_workflow(
        self, input: temporalio.client.StartWorkflowInput
    ) -> temporalio.client.WorkflowHandle[Any, Any]:
        input.headers = _with_trace(input.headers)
        return await self.next.start_workflow(input)

    async def signal_workflow(self, input: temporalio.client.SignalWorkflowInput) -> None:
        input.headers = _with_trace(input.headers)
        await self.next.signal_workflow(input)


class _ClientOutbound(temporalio.client.OutboundInterceptor):
    async def start_workflow(
        self, input: temporalio.client.StartWorkflowInput
    ) -> temporalio.client.WorkflowHandle[Any, Any]:
        input.headers = _with_trace(_headers.write(input.headers, _outgoing()))
        return await self.next.start_workflow(input)

    async def signal_workflow(self, input: temporalio.client.SignalWorkflowInput) -> None:
        input.headers = _with_trace(_headers.write(input.headers, _outgoing()))
        await self.next.signal_workflow(input)

    async def query_workflow(self, input: temporalio.client.QueryWorkflowInput) -> Any:
        input.headers = _headers.write(input.headers, _outgoing())
        return await self.next.query_workflow(input)

    async def start_workflow_update(
        self, input: temporalio.client.StartWorkflowUpdateInput
    ) -> temporalio.client.WorkflowUpdateHandle[Any]:
        input.headers = _headers.write(input.headers, _outgoing())
        return await self.next.start_workflow_update(input)

    async def start_activity(
        self, input: temporalio.client.StartActivityInput
    ) -> temporalio.client.ActivityHandle[Any]:
        input.headers = _with_trace(_headers.write(input.headers, _outgoing()))
        return await self.next.start_activity(input)


class _WorkflowInbound(temporalio.worker.WorkflowInboundInterceptor):
    """Restores the stamp for the workflow's run and for each handler (each runs in its own task)."""

    trace: Payload | None = None  # the trace context the workflow was started with, passed on as is

    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        self.next.init(_WorkflowOutbound(outbound, self))

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        self.trace = input.headers.get(TRACE_HEADER)
        stamp = _headers.read(input.headers)
        if stamp is not None:
            current_stamp.set(stamp)
        return await self.next.execute_workflow(input)

    async def handle_signal(self, input: temporalio.worker.HandleSignalInput) -> None:
        stamp = _headers.read(input.headers)
        token = current_stamp.set(stamp) if stamp is not None else None
        try:
            await self.next.handle_signal(input)
        finally:
            if token is not None:
                current_stamp.reset(token)

    async def handle_update_handler(self, input: temporalio.worker.HandleUpdateInput) -> Any:
        stamp = _headers.read(input.headers)
        token = current_stamp.set(stamp) if stamp is not None else None
        try:
            return await self.next.handle_update_handler(input)
        finally:
            if token is not None:
                current_stamp.reset(token)


class _WorkflowOutbound(temporalio.worker.WorkflowOutboundInterceptor):
    """Stamps what the workflow sends with the stamp of the task sending it (deterministic: the
    stamp comes from the workflow's own history, never from the worker's environment); activities and
    child workflows also get the trace context the workflow was started with."""

    def __init__(
        self, next: temporalio.worker.WorkflowOutboundInterceptor, inbound: _WorkflowInbound
    ) -> None:
        super().__init__(next)
        self._inbound = inbound

    def _traced(self, headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
        trace = self._inbound.trace
        if trace is None or TRACE_HEADER in headers:
            return headers
        return {**headers, TRACE_HEADER: trace}

    def start_activity(self, input: temporalio.worker.StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = self._traced(_headers.write(input.headers, current_stamp.get()))
        return self.next.start_activity(input)

    def start_local_activity(
        self, input: temporalio.worker.StartLocalActivityInput
    ) -> workflow.ActivityHandle[Any]:
        input.headers = self._traced(_headers.write(input.headers, current_stamp.get()))
        return self.next.start_local_activity(input)

    async def start_child_workflow(
        self, input: temporalio.worker.StartChildWorkflowInput
    ) -> workflow.ChildWorkflowHandle[Any, Any]:
        input.headers = self._traced(_headers.write(input.headers, current_stamp.get()))
        return await self.next.start_child_workflow(input)

    async def signal_child_workflow(self, input: temporalio.worker.SignalChildWorkflowInput) -> None:
        input.headers = _headers.write(input.headers, current_stamp.get())
        await self.next.signal_child_workflow(input)

    async def signal_external_workflow(self, input: temporalio.worker.SignalExternalWorkflowInput) -> None:
        input.headers = _headers.write(input.headers, current_stamp.get())
        await self.next.signal_external_workflow(input)

    def continue_as_new(self, input: temporalio.worker.ContinueAsNewInput) -> NoReturn:
        input.headers = _headers.write(input.headers, current_stamp.get())
        self.next.continue_as_new(input)


class _TracedActivity(temporalio.worker.ActivityInboundInterceptor):
    """Runs the activity (and the papayya attempt it may be) inside the trace context it carries."""

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        with trace_context.attached(_trace_of(input.headers)):
            return await self.next.execute_activity(input)


__all__ = ["TRACE_HEADER", "Interceptor", "TraceContext"]
