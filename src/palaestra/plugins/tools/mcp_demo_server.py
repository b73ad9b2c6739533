"""A small MCP server (stdio) bundled for the `tools/mcp-demo` environment: elements, temperatures, notes.

Run: python -m palaestra.plugins.tools.mcp_demo_server
"""

from __future__ import annotations

from typing import Any

try:  # mcp 2.x renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer as _Server
except ImportError:  # pragma: no cover - mcp 1.x
    from mcp.server.fastmcp import FastMCP as _Server  # type: ignore[no-redef,attr-defined]

ELEMENTS = {
    "H": ("hydrogen", 1, 1.008),
    "He": ("helium", 2, 4.0026),
    "C": ("carbon", 6, 12.011),
    "N": ("nitrogen", 7, 14.007),
    "O": ("oxygen", 8, 15.999),
    "Na": ("sodium", 11, 22.990),
    "Cl": ("chlorine", 17, 35.45),
    "Fe": ("iron", 26, 55.845),
    "Cu": ("copper", 29, 63.546),
    "Au": ("gold", 79, 196.97),
}

server = _Server("palaestra-demo")
notes: list[str] = []


@server.tool()
def element(symbol: str) -> dict[str, Any]:
    """Name, atomic number and atomic mass of a chemical element, by its symbol (e.g. Fe)."""
    if symbol not in ELEMENTS:
        raise ValueError(f"unknown element symbol {symbol!r}; known: {', '.join(ELEMENTS)}")
    name, number, mass = ELEMENTS[symbol]
    return {"symbol": symbol, "name": name, "atomic_number": number, "atomic_mass": mass}


@server.tool()
def convert_temperature(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a temperature between C, F and K."""
    to_kelvin = {"C": lambda v: v + 273.15, "F": lambda v: (v - 32) * 5 / 9 + 273.15, "K": lambda v: v}
    from_kelvin = {"C": lambda k: k - 273.15, "F": lambda k: (k - 273.15) * 9 / 5 + 32, "K": lambda k: k}
    if from_unit not in to_kelvin or to_unit not in from_kelvin:
        raise ValueError("units are C, F or K")
    return round(from_kelvin[to_unit](to_kelvin[from_unit](value)), 2)


@server.tool()
def add_note(text: str) -> str:
    """Save a note."""
    notes.append(text)
    return f"saved note {len(notes)}"


@server.tool()
def list_notes() -> list[str]:
    """All saved notes."""
    return list(notes)


if __name__ == "__main__":
    server.run()
