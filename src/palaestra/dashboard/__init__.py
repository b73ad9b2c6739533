"""The web dashboard: catalog, live episodes, episode viewer, reward curves, leaderboards, sandbox pools,
and a play page where a person plays any environment against the server. Plain HTML/JS/CSS in `static/`
served by a small asyncio HTTP server (`http.py`); see docs/dashboard.md."""
