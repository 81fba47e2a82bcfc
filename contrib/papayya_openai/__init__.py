"""papayya_openai: OpenAI client instrumentation (being built)."""
