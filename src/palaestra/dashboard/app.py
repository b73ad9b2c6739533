"""The dashboard: JSON endpoints over the running server and its trajectory store, the static pages, the
login, and the play page's episodes.

Reading (catalog, live episodes, sandbox pools) looks at the server's own objects in-process: nothing is
copied and nothing can be stale. Playing goes through the public gRPC client to the server's own port,
with the token the person logged in with: a played episode is an ordinary episode of that principal,
checked, limited and recorded exactly like a trainer's (the path a model takes is the path a person
takes). Store queries run in worker threads so the server's event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import mimetypes
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palaestra import types as t
from palaestra.agents.client import AsyncClient, PalaestraError
from palaestra.dashboard.http import HTTPError, HTTPServer, Request, Response
from palaestra.dashboard.settings import DashboardSettings
from palaestra.hookspecs import hookimpl
from palaestra.store.db import TrajectoryStore

log = logging.getLogger("palaestra.dashboard")

STATIC = Path(__file__).parent / "static"
COOKIE = "palaestra_session"
PUBLIC_PATHS = {"/static/style.css"}  # besides /login, /healthz and /favicon.ico
Render = Callable[[t.Observation], "str | None"]
PLAY_RUN_MODEL = "human"  # the `model` of the run the play page tags its episodes with


@dataclass
class Played:
    token: str
    spec: t.EnvSpec
    used: float


class Dashboard:
    """One dashboard for one server. A pluggy plugin: it starts when the server has started."""

    def __init__(self, server: Any, settings: DashboardSettings, store_path: str = "") -> None:
        self.server = server
        self.settings = settings
        self.store = TrajectoryStore(store_path) if store_path else None
        self.http = HTTPServer(self.handle, settings.host, settings.port)
        self._sessions: dict[str, str] = {}  # session cookie -> token
        self._clients: dict[str, AsyncClient] = {}  # token -> client of the server
        self._played: dict[str, Played] = {}  # episodes opened from the play page
        self._play_runs: dict[str, str] = {}  # principal -> run id
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: list[asyncio.Task[None]] = []
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @hookimpl
    def palaestra_server_started(self, address: str, environments: list[str]) -> None:
        sock = self.http.bind()  # synchronously: the port is known when the server's start returns
        self.port = self.http.port
        self._spawn(self.http.start(sock))
        self._spawn(self._reap_played_forever())
        log.info("dashboard on %s", self.url)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @hookimpl
    def palaestra_server_stopping(self) -> None:
        """End the play page's streams while the server still serves them (their episodes close)."""
        clients, self._clients = list(self._clients.values()), {}
        self._closing = [asyncio.get_running_loop().create_task(_quietly(c.aclose())) for c in clients]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.http.stop()
        await asyncio.gather(*self._closing, *(_quietly(c.aclose()) for c in self._clients.values()))
        self._clients.clear()
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------ authentication

    def _tokens(self) -> dict[str, str]:
        """token -> principal name; empty when the server takes no token."""
        config = self.server.config
        tokens = {config.auth_token: "default"} if config.auth_token else {}
        for name, principal in config.principals.items():
            token = principal.resolved_token()
            if token:
                tokens[token] = name
        return tokens

    def _check_token(self, candidate: str) -> str | None:
        """The principal of a token (constant-time comparison), or None."""
        found = None
        for token, name in self._tokens().items():
            if hmac.compare_digest(token.encode(), candidate.encode()):
                found = name
        return found

    def _authenticate(self, request: Request) -> tuple[str, str] | None:
        """(token, principal) of the request, ("", "anonymous") without auth, None when refused."""
        if not self._tokens():
            return "", "anonymous"
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            principal = self._check_token(value.strip())
            return (value.strip(), principal) if principal else None
        token = self._sessions.get(request.cookies.get(COOKIE, ""))
        if token is not None:
            principal = self._check_token(token)
            if principal:
                return token, principal
        return None

    async def _login(self, request: Request) -> Response:
        if request.method == "GET":
            return _static("login.html")
        token = request.form().get("token", "")
        if not self._tokens() or self._check_token(token) is None:
            return Response(
                401, (STATIC / "login.html").read_bytes().replace(b"<!--error-->", _BAD_TOKEN), _HTML
            )
        session = secrets.token_urlsafe(32)
        self._sessions[session] = token
        cookie = f"{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/"
        return Response.redirect("/", {"Set-Cookie": cookie})

    # ------------------------------------------------------------ routing

    async def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/healthz":
            return Response(200, b"ok")
        if path == "/login":
            return await self._login(request)
        if path == "/favicon.ico":
            return Response(204)
        if path in PUBLIC_PATHS:
            return _static(path.removeprefix("/static/"))
        who = self._authenticate(request)
        if who is None:
            if path.startswith("/api/"):
                return Response.json({"error": "missing or wrong token: log in or send a bearer token"}, 401)
            return Response.redirect("/login")
        if path == "/logout":
            self._sessions.pop(request.cookies.get(COOKIE, ""), None)
            return Response.redirect("/login", {"Set-Cookie": f"{COOKIE}=; Max-Age=0; Path=/"})
        if path == "/" or path == "/index.html":
            return _static("index.html")
        if path.startswith("/static/"):
            return _static(path.removeprefix("/static/"))
        if path.startswith("/api/"):
            return await self._api(request, *who)
        raise HTTPError(404, f"no page {path}")

    async def _api(self, request: Request, token: str, principal: str) -> Response:
        route = request.path.removeprefix("/api/")
        q = request.query
        if route.startswith("play/") and request.method != "POST":
            raise HTTPError(405, f"/api/{route} takes POST with a JSON body")
        if request.method == "POST" and route.startswith("play/"):
            body = request.json()
            if not isinstance(body, dict):
                raise HTTPError(400, "the request body must be a JSON object")
            if route == "play/open":
                return Response.json(await self.play_open(token, principal, body))
            if route == "play/step":
                return Response.json(await self.play_step(token, body))
            if route == "play/close":
                return Response.json(await self.play_close(token, body))
        if request.method != "GET":
            raise HTTPError(405, f"{request.method} /api/{route} is not allowed")
        if route == "info":
            return Response.json(self.info(principal))
        if route == "catalog":
            return Response.json(await self.catalog())
        if route == "live":
            return Response.json(self.live())
        if route == "sandboxes":
            return Response.json(self.sandboxes())
        if route == "episodes":
            limit = _int(q.get("limit"), 100, "limit")
            offset = _int(q.get("offset"), 0, "offset")
            return Response.json(
                await self._stored(
                    lambda s: s.episodes(q.get("env_id") or None, q.get("run_id") or None, limit, offset)
                )
            )
        if route.startswith("episodes/"):
            return Response.json(await self.episode(route.removeprefix("episodes/")))
        if route == "curves":
            env_id = q.get("env_id")
            if env_id:
                return Response.json(await self._stored(lambda s: s.curve(env_id)))
            return Response.json(await self._stored(lambda s: s.environments()))
        if route == "runs":
            return Response.json(await self._stored(lambda s: s.runs()))
        if route == "leaderboards":
            return Response.json(await asyncio.to_thread(self.leaderboards))
        raise HTTPError(404, f"no endpoint /api/{route}")

    # ------------------------------------------------------------ reading the server

    def info(self, principal: str) -> dict[str, Any]:
        import palaestra

        return {
            "server_version": palaestra.__version__,
            "address": self.server.address,
            "store": self.store is not None,
            "store_path": str(self.store.path) if self.store else "",
            "principal": principal,
            "auth": bool(self._tokens()),
            "environments": len(self.server.plugins.envs),
        }

    async def catalog(self) -> list[dict[str, Any]]:
        stats = {}
        if self.store is not None:
            stats = {row["env_id"]: row for row in await self._stored(lambda s: s.environments())}
        out = []
        for registration in self.server.plugins.envs:
            spec: t.EnvSpec = registration.spec
            out.append({**spec_json(spec), "recorded": stats.get(spec.id)})
        return out

    def live(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        table = self.server.runtime.table
        rows = []
        for episode in table.episodes():
            rows.append(
                {
                    "episode_id": episode.id,
                    "env_id": episode.spec.id,
                    "owner": episode.owner,
                    "principal": episode.principal,
                    "played_here": episode.id in self._played,
                    "steps": episode.steps,
                    "age_s": now - episode.opened_at,
                    "idle_s": now - episode.last_active,
                    "returns": dict(episode.returns),
                    "finished": episode.finished,
                    "next_agent": episode.next_agent,
                    "infra_failure": episode.infra_failure.message if episode.infra_failure else None,
                }
            )
        return sorted(rows, key=lambda r: r["age_s"])

    def sandboxes(self) -> dict[str, Any]:
        manager = self.server.sandboxes
        if manager is None:
            return {"available": False, "profiles": {}, "pools": []}
        pools = []
        for backend_name, backend in getattr(manager, "backends", {}).items():
            for profile, (_, pool) in getattr(backend, "pools", {}).items():
                pools.append(
                    {
                        "backend": backend_name,
                        "profile": profile,
                        "size": pool.size,
                        "ready": len(pool.ready),
                        "creating": pool.creating,
                        "failures": pool.failures,
                    }
                )
        return {"available": True, "profiles": manager.describe(), "pools": pools}

    async def _stored(self, query: Any) -> Any:
        if self.store is None:
            raise HTTPError(404, "this server keeps no trajectory store: set [store] path (or serve --store)")
        return await asyncio.to_thread(query, self.store)

    async def episode(self, episode_id: str) -> dict[str, Any]:
        record = await self._stored(lambda s: s.episode(episode_id))
        if record is None:
            raise HTTPError(404, f"no recorded episode {episode_id!r} (still open, or never recorded)")
        record["runs"] = (await self._stored(lambda s: s.runs_of([episode_id]))).get(episode_id, [])
        return dict(record)

    def leaderboards(self) -> list[dict[str, Any]]:
        """OpenSkill ratings per game: from recorded game episodes (against bots and between clients)
        and from the tournament results files in `[dashboard] results`."""
        try:
            from palaestra.plugins.games.tournament import GameRecord, ratings, read_results
        except ImportError:
            return []
        games = {r.spec.id for r in self.server.plugins.envs if "games" in r.spec.tags}
        records: list[Any] = []
        if self.store is not None:
            records += game_records(self.store, games, GameRecord)
        for path in self.settings.results:
            with contextlib.suppress(OSError, ValueError, TypeError):
                records += read_results(path)
        by_game: dict[str, list[Any]] = {}
        for record in records:
            by_game.setdefault(record.env_id, []).append(record)
        return [
            {"env_id": env_id, "games": len(recs), "rows": ratings(recs)}
            for env_id, recs in sorted(by_game.items())
        ]

    # ------------------------------------------------------------ playing

    async def _client(self, token: str) -> AsyncClient:
        client = self._clients.get(token)
        if client is None:
            config = self.server.config
            host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(config.host, config.host)
            client = AsyncClient(
                f"{host}:{self.server.port}",
                token=token or None,
                tls_root_cert=config.tls_cert or None,
                max_message_mb=config.max_message_mb,
            )
            self._clients[token] = client
        return client

    def _owned(self, token: str, body: Mapping[str, Any]) -> tuple[str, Played]:
        episode_id = body.get("episode_id")
        played = self._played.get(episode_id) if isinstance(episode_id, str) else None
        if played is None or played.token != token:
            raise HTTPError(404, f"no episode {episode_id!r} opened from this dashboard session")
        played.used = time.monotonic()
        return str(episode_id), played

    async def play_open(self, token: str, principal: str, body: Mapping[str, Any]) -> dict[str, Any]:
        env_id = body.get("env_id")
        if not isinstance(env_id, str) or not env_id:
            raise HTTPError(400, "play/open needs env_id (a string)")
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise HTTPError(400, f"seed must be an integer, got {seed!r}")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise HTTPError(400, "options must be a JSON object")
        client = await self._client(token)
        try:
            spec = await client.describe(env_id)
            [step] = await client.open(env_id, seed=seed, options=options)
        except PalaestraError as exc:
            raise HTTPError(_http_status(exc), str(exc)) from None
        self._played[step.episode_id] = Played(token, spec, time.monotonic())
        await self._tag_play(principal, step.episode_id)
        return {"spec": spec_json(spec), "step": step_json(step, self._renderer(spec))}

    async def play_step(self, token: str, body: Mapping[str, Any]) -> dict[str, Any]:
        episode_id, played = self._owned(token, body)
        action = parse_action(body.get("action"))
        agent = body.get("agent") or ""
        if not isinstance(agent, str):
            raise HTTPError(400, "agent must be a string")
        client = await self._client(token)
        try:
            step = await client.step(episode_id, {agent: action})
        except PalaestraError as exc:
            raise HTTPError(_http_status(exc), str(exc)) from None
        return {"step": step_json(step, self._renderer(played.spec))}

    async def play_close(self, token: str, body: Mapping[str, Any]) -> dict[str, Any]:
        episode_id, _ = self._owned(token, body)
        client = await self._client(token)
        try:
            summaries = await client.close(episode_id)
        except PalaestraError as exc:
            raise HTTPError(_http_status(exc), str(exc)) from None
        finally:
            self._played.pop(episode_id, None)
        return {"summary": summary_json(summaries[0]) if summaries else None}

    def _renderer(self, spec: t.EnvSpec) -> Render | None:
        """Draws a tensor observation as text (a game board) through the plugins' render hook, if any."""
        hook = getattr(self.server.plugins.hook, "palaestra_render_text", None)
        if hook is None:
            return None

        def render(observation: t.Observation) -> str | None:
            text: str | None = hook(spec=spec, observation=observation)
            return text

        return render

    async def _tag_play(self, principal: str, episode_id: str) -> None:
        if self.store is None:
            return
        store = self.store
        run_id = self._play_runs.get(principal)
        if run_id is None:
            run_id = await asyncio.to_thread(
                store.start_run, "play", PLAY_RUN_MODEL, {"principal": principal, "source": "dashboard"}
            )
            self._play_runs[principal] = run_id
        await asyncio.to_thread(store.add_run_episodes, run_id, [episode_id])

    async def _reap_played_forever(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.settings.play_idle_timeout_s / 4))
            cutoff = time.monotonic() - self.settings.play_idle_timeout_s
            for episode_id, played in list(self._played.items()):
                if played.used < cutoff:
                    self._played.pop(episode_id, None)
                    with contextlib.suppress(Exception):
                        await (await self._client(played.token)).close(episode_id)


async def _quietly(closing: Any) -> None:
    with contextlib.suppress(Exception):
        await closing


# ---------------------------------------------------------------- JSON views


def space_json(space: t.Space) -> dict[str, Any]:
    kind = type(space).__name__.removesuffix("Space").lower()
    fields = {k: v for k, v in space.__dict__.items() if k not in ("low", "high")}
    return {"kind": kind, **fields}


def spec_json(spec: t.EnvSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "description": spec.description,
        "kind": spec.kind.name.lower(),
        "agents": list(spec.agents),
        "observation_space": space_json(spec.observation_space),
        "action_space": space_json(spec.action_space),
        "reward_components": [
            {"name": c.name, "kind": c.kind.name.lower(), "description": c.description}
            for c in spec.reward_components
        ],
        "tags": list(spec.tags),
        "max_episode_steps": spec.max_episode_steps,
        "num_tasks": spec.num_tasks,
        "plugin": spec.plugin,
    }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def agent_result_json(result: t.AgentResult, render: Render | None) -> dict[str, Any]:
    observation = result.observation
    text = ""
    if observation.tensor is not None and not observation.messages and render is not None:
        with contextlib.suppress(Exception):
            text = render(observation) or ""
    mask = observation.action_mask
    return {
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "name": m.name,
                "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls],
                "tool_call_id": m.tool_call_id,
            }
            for m in observation.messages
        ],
        "tools": observation.tools,
        "legal_actions": list(observation.legal_actions),
        "legal_indices": [int(i) for i in mask.nonzero()[0]] if mask is not None else None,
        "rendered": text,
        "tensor": _tensor_preview(observation.tensor)
        if observation.tensor is not None and not text
        else None,
        "reward": _finite(result.scalar_reward),
        "components": [
            {
                "name": c.name,
                "kind": c.kind.name.lower(),
                "value": _finite(c.value),
                "weight": c.weight,
                "status": c.status.name.lower(),
                "detail": c.detail,
            }
            for c in result.components
        ],
        "checklist": [
            {
                "item_id": c.item_id,
                "turn": c.turn,
                "passed": c.passed,
                "weight": c.weight,
                "status": c.status.name.lower(),
                "reason": c.reason,
                "evidence": [{"turn": e.turn, "step": e.step, "snippet": e.snippet} for e in c.evidence],
            }
            for c in result.checklist
        ],
        "terminated": result.terminated,
        "truncated": result.truncated,
        "info": {k: v for k, v in result.info.items() if isinstance(v, str | int | float | bool)},
    }


def _tensor_preview(tensor: Any, limit: int = 64) -> dict[str, Any]:
    """A tensor observation for a person: its shape and its first values."""
    flat = tensor.reshape(-1)
    return {"shape": list(tensor.shape), "values": flat[:limit].tolist(), "truncated": flat.size > limit}


def step_json(step: t.EpisodeStep, render: Render | None = None) -> dict[str, Any]:
    return {
        "episode_id": step.episode_id,
        "done": step.done,
        "next_agent": step.next_agent,
        "step_index": step.step_index,
        "infra_failure": (
            {"source": step.infra_failure.source, "message": step.infra_failure.message}
            if step.infra_failure
            else None
        ),
        "agents": {agent: agent_result_json(result, render) for agent, result in step.agents.items()},
    }


def summary_json(summary: t.EpisodeSummary) -> dict[str, Any]:
    return {
        "episode_id": summary.episode_id,
        "env_id": summary.env_id,
        "steps": summary.steps,
        "terminated": summary.terminated,
        "truncated": summary.truncated,
        "close_reason": summary.close_reason,
        "agents": [
            {
                "agent": a.agent,
                "return": a.episode_return,
                "components": [{"name": c.name, "total": c.total, "not_ok": c.not_ok} for c in a.components],
            }
            for a in summary.agents
        ],
        "infra_failure": summary.infra_failure.message if summary.infra_failure else None,
    }


def parse_action(raw: Any) -> t.Action:
    """An action from the play page: {"text"}, {"discrete"} or {"message": {content, tool_calls}}."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise HTTPError(400, 'action must be one of {"text": ...}, {"discrete": ...}, {"message": {...}}')
    [(kind, value)] = raw.items()
    if kind == "text" and isinstance(value, str):
        return t.Action(text=value)
    if kind == "discrete" and isinstance(value, int) and not isinstance(value, bool):
        return t.Action(discrete=value)
    if kind == "message" and isinstance(value, dict):
        calls = value.get("tool_calls") or []
        if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls
        ):
            raise HTTPError(400, "message.tool_calls must be a list of {name, arguments}")
        return t.Action(
            message=t.Message(
                "assistant",
                str(value.get("content", "")),
                tool_calls=[
                    t.ToolCall(c["name"], str(c.get("arguments", "{}")), str(c.get("id", ""))) for c in calls
                ],
            )
        )
    raise HTTPError(
        400,
        f"cannot make an action of {kind}={value!r}: action must be one of "
        '{"text": string}, {"discrete": integer}, {"message": {"content", "tool_calls"}}',
    )


def game_records(store: TrajectoryStore, games: set[str], record_type: Any) -> list[Any]:
    """Recorded game episodes as the games plugin's GameRecords: against a built-in bot (the bot scores
    the opposite outcome) and multi-client matches (the seats of one match_id joined). Players are named
    by the run's model where the episode was tagged with one, else by the principal."""
    records = []
    matches: dict[str, dict[str, Any]] = {}
    for env_id in sorted(games):
        episodes = list(store.iter_episodes(env_id=env_id, with_trajectory=False))
        runs = store.runs_of([e["episode_id"] for e in episodes])
        for episode in episodes:
            if episode["infra_source"] is not None or len(episode["agents"]) != 1:
                continue  # self-play (one player holds every seat) is no rating game
            [agent] = episode["agents"]
            outcome = sum(c["total"] for c in agent["components"] if c["name"] == "outcome")
            player = _player_name(episode, runs.get(episode["episode_id"], []))
            options = episode["options"]
            if "opponent" in options:
                bot = f"bot:{options['opponent']}"
                seats = {agent["agent"]: player, "opponent": bot}
                scores = {player: outcome, bot: -outcome} if player != bot else {}
                if scores:
                    records.append(
                        record_type(
                            env_id, episode["seed"] or 0, seats, scores, "", time=episode["finished_at"]
                        )
                    )
            elif "match_id" in options:
                match = matches.setdefault(
                    f"{env_id}/{options['match_id']}",
                    {"env_id": env_id, "seats": {}, "scores": {}, "time": 0.0},
                )
                match["seats"][agent["agent"]] = player
                match["scores"][player] = outcome
                match["time"] = max(match["time"], episode["finished_at"])
    for match in matches.values():
        if len(match["scores"]) > 1:
            records.append(
                record_type(match["env_id"], 0, match["seats"], match["scores"], "", time=match["time"])
            )
    return records


def _player_name(episode: Mapping[str, Any], runs: list[dict[str, Any]]) -> str:
    for run in runs:
        if run["model"]:
            principal = run["tags"].get("principal")
            return (
                f"{run['model']} ({principal})"
                if principal and run["model"] == PLAY_RUN_MODEL
                else run["model"]
            )
    principal = str(episode.get("principal") or "")
    return "anonymous" if not principal or principal.startswith(("stream:", "unary:", "peer:")) else principal


def _int(raw: str | None, default: int, name: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise HTTPError(400, f"{name} must not be negative")
    return value


def _http_status(exc: PalaestraError) -> int:
    name = exc.code.name
    return {
        "INVALID_ARGUMENT": 400,
        "NOT_FOUND": 404,
        "FAILED_PRECONDITION": 409,
        "RESOURCE_EXHAUSTED": 429,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "UNAVAILABLE": 503,
    }.get(name, 502)


_HTML = "text/html; charset=utf-8"
_BAD_TOKEN = b'<p class="error">That token is not accepted by this server.</p>'


def _static(name: str) -> Response:
    path = (STATIC / name).resolve()
    if STATIC.resolve() not in path.parents or not path.is_file():
        raise HTTPError(404, f"no file {name}")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return Response(200, path.read_bytes(), content_type)
