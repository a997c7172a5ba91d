"""The agent run pipeline: model providers, options, runner, events, records."""
