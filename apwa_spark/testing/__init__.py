"""Real parts for fault tests and benchmarks (not mocks): a faulty OpenAI-compatible endpoint."""
