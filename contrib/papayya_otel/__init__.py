"""papayya_otel: not yet.

This place is reserved in the papayya distribution; the integration it names is
not built yet. Importing it works so the layout is stable, but nothing here runs
items. See the README's "What is not done yet".
"""

__all__: list[str] = []
