"""A small MCP server (stdio) written for tests/test_tools_mcp.py: a counter and a dictionary lookup."""

from __future__ import annotations

import os

try:
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[no-redef,attr-defined]

app = Server("palaestra-test")
counter = {"value": 0}
WORDS = {"gato": "cat", "perro": "dog", "casa": "house"}


@app.tool()
def increment(by: int) -> int:
    """Add `by` to the counter and return the new value."""
    counter["value"] += by
    return counter["value"]


@app.tool()
def translate(word: str) -> str:
    """Translate a Spanish word to English."""
    if word not in WORDS:
        raise ValueError(f"unknown word {word!r}")
    return WORDS[word]


@app.tool()
def crash() -> str:
    """Ends the server process abruptly."""
    os._exit(3)


if __name__ == "__main__":
    app.run()
