"""A tenant's MCP servers, reached only through the service: the service connects to
each (its credentials substituted here, its address checked and pinned) and hands the
agent an in-process proxy of its tools."""
