"""Tools for the model: MCP servers configured, run and called, and the approval policy."""
