"""``papayya ui``: a local dashboard over the same store as the CLI.

Runs (live while they run), tenants (spend over time against budget, outcome rates, pauses, budget and
limit edits), a run (outcomes, failure clusters, cost by model, replays; pause, resume, replay
buttons), an item (its input and every attempt side by side) and provider batches (not for tenant
tokens). Server-rendered HTML from Jinja2 templates on Starlette, charts as inline SVG, CSS and
JavaScript shipped in the package.

Needs the ``ui`` extra (``pip install 'papayya[ui]'``); the rest of papayya imports without it. Start
it with ``papayya ui``, or build the application with :func:`papayya.ui.app.create_app`.
"""

from __future__ import annotations

__all__: list[str] = []
