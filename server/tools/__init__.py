"""The MCP tools: the server and its lifespan, tool registration, answer shaping, token budgets."""
