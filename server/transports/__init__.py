"""How the MCP server is reached: stdio (and, next, streamable HTTP)."""
