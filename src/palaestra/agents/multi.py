"""One client view over several server replicas: `MultiAsyncClient`, what `AsyncClient` and `Client` become
when given several addresses or a directory.

```python
Client("127.0.0.1:50051,127.0.0.1:50052")       # fixed replicas (or a list of addresses)
Client("directory:palaestra-directory")          # the replicas a directory actor on Ray lists
AsyncClient(["127.0.0.1:50051", "127.0.0.1:50052"], down_s=10.0)
```

It has the methods of `AsyncClient`, so the trainers, wrappers and `palaestra eval` take it unchanged.

- **Placement.** Each `open` (a GRPO group: `count=N`) and each vector (`VectorOpenRequest`, its N
  episodes) goes to ONE replica, the one with the most free episode slots: with a directory, the free slots
  the replica last reported minus those this client opened there after that report; without one, the
  server's `max_episodes` minus this client's open episodes there. Drained and unhealthy replicas take no
  new episodes; a replica that refuses an open (full: RESOURCE_EXHAUSTED; drained or stopping: UNAVAILABLE)
  is passed over for another one.
- **Affinity.** Every later request about an episode (or a vector) goes to the replica that opened it.
- **Batching.** `step_many`, `step_batch`, `reset_many` and `close` split their episodes by replica and send
  ONE message per replica, concurrently; single `step`s asked for in one event-loop turn are coalesced per
  replica by that replica's `AsyncClient`.
- **Failures.** A replica that dies ends only its own episodes: their steps come back done with an
  infrastructure failure (source "connection"), as with one server. The replica is then avoided for new
  episodes (`down_s`), and an `open` that fails there for lack of a connection is retried on another one.

Agents never import the server: the directory is reached by name through Ray, and Ray is imported only then
(joining the cluster this machine belongs to, `ray.init(address="auto")`, if this process has not already).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from palaestra import types as t
from palaestra.agents.client import (
    Actions,
    AsyncClient,
    PalaestraError,
    StreamBroken,
    episode_ids,
    replica_addresses,
)
from palaestra.v1 import catalog_pb2, env_pb2

DIRECTORY_NAME = "palaestra-directory"  # palaestra.cluster.DIRECTORY_NAME (agents do not import it)
NAMESPACE = "palaestra"
T = TypeVar("T")

_CONNECTION_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)


class MultiAsyncClient(AsyncClient):
    """Episodes spread over replicas, each episode kept on its replica. `async with AsyncClient([...])`.

    A subclass of `AsyncClient` for its public methods only: it holds no stream of its own but one
    `AsyncClient` per replica."""

    def __init__(
        self,
        address: str | Sequence[str] = (),
        *,
        directory: str | None = None,
        namespace: str = NAMESPACE,
        refresh_s: float = 1.0,
        open_timeout_s: float = 10.0,
        down_s: float = 5.0,
        **client_kwargs: Any,
    ) -> None:
        """`address`: replicas as `AsyncClient` takes them ("h1:p1,h2:p2", a list, "directory:NAME");
        `directory`: the name of a directory actor, whose snapshot is re-read at most every `refresh_s`
        seconds. `open_timeout_s`: how long an open waits for one replica before trying another.
        `down_s`: how long a replica that lost its connection or refused an open for being drained is
        passed over. `client_kwargs` go to each replica's `AsyncClient`."""
        fixed: list[str] = []
        if address:
            parsed = replica_addresses(address)
            fixed, named = parsed if parsed is not None else ([str(address)], None)
            directory = named if named is not None else directory
        if directory is not None:
            directory = directory or DIRECTORY_NAME
        elif not fixed:
            raise ValueError("give replica addresses or a directory name")
        self.directory_name = directory
        self.namespace = namespace
        self.refresh_s = refresh_s
        self.open_timeout_s = open_timeout_s
        self.down_s = down_s
        self.client_kwargs = client_kwargs
        self.clients: dict[str, AsyncClient] = {}
        self.home: dict[str, str] = {}  # episode id -> replica address
        self.vectors: dict[str, tuple[str, int]] = {}  # vector id -> (replica address, its episodes)
        self.open_here: dict[str, int] = {}  # replica address -> this client's open episodes there
        self.reported: dict[str, int] = {}  # replica address -> free slots in the last snapshot
        self.reported_at: dict[str, float] = {}  # replica address -> when the replica measured them
        # replica address -> (wall time, count) of this client's opens there, until a report includes them
        self.recent_opens: dict[str, list[tuple[float, int]]] = {}
        self.pending: dict[str, int] = {}  # replica address -> episodes being opened there now
        self.down_until: dict[str, float] = {}
        self.fixed = fixed
        self._directory: Any = None
        self._refreshed = -1e9
        self._refresh_lock = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> MultiAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ replicas

    def _client(self, address: str) -> AsyncClient:
        if self._closed:
            raise PalaestraError(grpc.StatusCode.CANCELLED, "the client is closed")
        client = self.clients.get(address)
        if client is None:
            client = self.clients[address] = AsyncClient(address, **self.client_kwargs)
            self.open_here.setdefault(address, 0)
        return client

    async def _refresh(self, force: bool = False) -> None:
        if self.directory_name is None:
            now = time.monotonic()
            for address in self.fixed:
                if address not in self.reported and self.down_until.get(address, 0.0) <= now:
                    try:
                        info = await self._client(address).server_info()
                    except PalaestraError:  # unreachable now: placed elsewhere, asked again after down_s
                        self._mark_down(address)
                        continue
                    self.reported[address] = info.max_episodes
            return
        async with self._refresh_lock:
            loop = asyncio.get_running_loop()
            if not force and loop.time() - self._refreshed < self.refresh_s:
                return
            if self._directory is None:
                self._directory = _directory_actor(self.directory_name, self.namespace)
            snapshot = await asyncio.wrap_future(self._directory.snapshot.remote(False).future())
            listed = [e for e in snapshot if not e["draining"]]
            self.reported = {e["address"]: int(e["free_episodes"]) for e in listed}
            self.reported_at = {e["address"]: float(e["reported_at"]) for e in listed}
            for address, opens in self.recent_opens.items():
                since = self.reported_at.get(address, 0.0)
                opens[:] = [(at, n) for at, n in opens if at > since]
            self._refreshed = loop.time()

    def _free(self, address: str) -> int:
        opening = self.pending.get(address, 0)  # concurrent opens are placed before any is answered
        if self.directory_name is None:
            return self.reported[address] - self.open_here.get(address, 0) - opening
        # Opens the replica had not yet counted when it reported (a report every heartbeat).
        return self.reported[address] - opening - sum(n for _, n in self.recent_opens.get(address, ()))

    def _choose(self, count: int, tried: set[str], full: set[str]) -> str:
        """The untried, reachable replica with the most free slots. None left: RESOURCE_EXHAUSTED when a
        reachable one is full (or refused as full: `full`), else UNAVAILABLE (all down, drained or none)."""
        now = time.monotonic()
        live = [a for a in self.reported if a not in tried and self.down_until.get(a, 0.0) <= now]
        candidates = [a for a in live if self._free(a) > 0]
        if not candidates:
            down = [a for a in self.reported if self.down_until.get(a, 0.0) > now]
            raise PalaestraError(
                grpc.StatusCode.RESOURCE_EXHAUSTED if live or full else grpc.StatusCode.UNAVAILABLE,
                f"no replica can take {count} episodes (replicas: {_names(self.reported)}; full: "
                f"{_names(full | set(live))}; tried: {_names(tried)}; passed over for down_s after a lost "
                f"connection or a drain: {_names(down)})",
            )
        return max(candidates, key=lambda a: (self._free(a), -self.open_here.get(a, 0)))

    def _mark_down(self, address: str) -> None:
        self.down_until[address] = time.monotonic() + self.down_s
        self._refreshed = -1e9  # re-read the directory before the next placement

    def replica_of(self, episode_id: str) -> str:
        """The address of the replica an episode lives on."""
        try:
            return self.home[episode_id]
        except KeyError:
            raise PalaestraError(
                grpc.StatusCode.NOT_FOUND, f"episode {episode_id!r} was not opened through this client"
            ) from None

    def _by_replica(self, episode_ids: Sequence[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for episode_id in episode_ids:
            groups.setdefault(self.replica_of(episode_id), []).append(episode_id)
        return groups

    def _note_lost(self, address: str, steps: Sequence[Any]) -> None:
        """A step answered with a lost connection: the replica is avoided for new episodes for a while."""
        for step in steps:
            failure = getattr(step, "infra_failure", None)
            if failure is not None and getattr(failure, "source", "") == "connection":
                self._mark_down(address)
                return

    # ------------------------------------------------------------ episodes

    async def _placed(self, count: int, call: Callable[[AsyncClient], Awaitable[T]]) -> tuple[str, T]:
        """Run an open of `count` episodes on the replica with the most free slots; on a replica that is
        full, drained or unreachable, on the next one. Returns the replica's address and the reply."""
        tried: set[str] = set()
        full: set[str] = set()
        refused = ""
        while True:
            await self._refresh(force=bool(tried))
            try:
                address = self._choose(count, tried, full)
            except PalaestraError as exc:
                if refused:
                    raise PalaestraError(exc.code, f"{exc.message}; last refusal: {refused}") from None
                raise
            client = self._client(address)
            self.pending[address] = self.pending.get(address, 0) + count
            try:
                result = await asyncio.wait_for(call(client), self.open_timeout_s)
            except (StreamBroken, TimeoutError) as exc:
                if isinstance(exc, PalaestraError) and exc.code not in _CONNECTION_CODES:
                    raise
                self._mark_down(address)
                tried.add(address)
                refused = f"{address}: {exc or 'no reply within open_timeout_s'}"
                continue
            except PalaestraError as exc:
                if exc.code == grpc.StatusCode.UNAVAILABLE:  # drained or stopping: passed over for down_s
                    self._mark_down(address)
                elif exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    full.add(address)
                else:
                    raise
                tried.add(address)  # full, drained or stopping there: another replica may have room
                refused = f"{address}: {exc}"
                continue
            finally:
                self.pending[address] -= count
            self.open_here[address] = self.open_here.get(address, 0) + count
            if self.directory_name is not None:  # only the directory's reports lag behind opens
                self.recent_opens.setdefault(address, []).append((time.time(), count))
            return address, result

    async def open(self, env_id: str, *, count: int = 1, **kwargs: Any) -> list[t.EpisodeStep]:
        """Open `count` episodes of one task on ONE replica (a GRPO group stays together)."""
        address, opened = await self._placed(count, lambda c: c.open(env_id, count=count, **kwargs))
        for step in opened:
            self.home[step.episode_id] = address
        return opened

    async def send(self, request: env_pb2.SessionRequest) -> env_pb2.SessionResponse:
        """A raw request (as `AsyncClient.send`), routed: a vector open is placed like an open of its
        episodes and its later requests go to its replica; an episode open is placed; a step, reset or
        close goes to the replica of its episodes (all on one replica; use step_many & co. otherwise)."""
        kind = request.WhichOneof("request")
        if kind == "vector_open":
            size = request.vector_open.num_envs
            address, reply = await self._placed(size, lambda c: c.send(request))
            self.vectors[reply.vector.vector_id] = (address, size)
            return reply
        if kind == "open":
            address, reply = await self._placed(request.open.count or 1, lambda c: c.send(request))
            self.home.update(dict.fromkeys((e.episode_id for e in reply.open.episodes), address))
            return reply
        if kind in ("vector_reset", "vector_step", "vector_close"):
            vector_id = getattr(request, kind).vector_id
            if vector_id not in self.vectors:
                raise PalaestraError(
                    grpc.StatusCode.NOT_FOUND, f"vector {vector_id!r} was not opened through this client"
                )
            address, size = self.vectors[vector_id]
            try:
                return await self._client(address).send(request)
            except StreamBroken:  # the replica is gone, and the vector with it
                self._mark_down(address)
                raise
            finally:
                if kind == "vector_close":
                    del self.vectors[vector_id]
                    self.open_here[address] = max(0, self.open_here.get(address, 0) - size)
        ids = episode_ids(request)
        groups = self._by_replica(ids)
        if len(groups) != 1:
            raise PalaestraError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"send() routes a {kind or 'empty'} request to ONE replica; its episodes are on "
                f"{len(groups)} (use step_many, reset_many or close, which split by replica)",
            )
        [address] = groups
        reply = await self._client(address).send(request)
        if kind == "close":
            self._forget(address, ids)
        return reply

    async def reset(self, episode_id: str, **kwargs: Any) -> t.EpisodeStep:
        return await self._client(self.replica_of(episode_id)).reset(episode_id, **kwargs)

    async def reset_many(self, episode_ids: Sequence[str]) -> list[t.EpisodeStep]:
        groups = self._by_replica(episode_ids)
        replies = await asyncio.gather(*(self._client(a).reset_many(ids) for a, ids in groups.items()))
        by_id = {step.episode_id: step for steps in replies for step in steps}
        return [by_id[episode_id] for episode_id in episode_ids]

    async def step(self, episode_id: str, action: Actions) -> t.EpisodeStep:
        address = self.replica_of(episode_id)
        step = await self._client(address).step(episode_id, action)
        self._note_lost(address, [step])
        return step

    async def step_many(
        self, actions: Mapping[str, Actions], *, raise_errors: bool = True
    ) -> dict[str, t.EpisodeStep | PalaestraError]:
        """Step many episodes: one message per replica, sent concurrently; results in `actions`' order."""
        groups = self._by_replica(list(actions))
        replies = await asyncio.gather(
            *(
                self._client(a).step_many({i: actions[i] for i in ids}, raise_errors=raise_errors)
                for a, ids in groups.items()
            )
        )
        merged: dict[str, t.EpisodeStep | PalaestraError] = {}
        for address, reply in zip(groups, replies, strict=True):
            self._note_lost(address, [s for s in reply.values() if not isinstance(s, PalaestraError)])
            merged.update(reply)
        return {episode_id: merged[episode_id] for episode_id in actions if episode_id in merged}

    async def step_batch(self, actions: Mapping[str, Actions]) -> env_pb2.StepResponse:
        """Like step_many but the raw reply: the replicas' replies merged, episodes in `actions`' order."""
        groups = self._by_replica(list(actions))
        replies = await asyncio.gather(
            *(self._client(a).step_batch({i: actions[i] for i in ids}) for a, ids in groups.items())
        )
        by_id = {}
        for address, reply in zip(groups, replies, strict=True):
            lost = [
                e
                for e in reply.episodes
                if e.HasField("infra_failure") and e.infra_failure.source == "connection"
            ]
            if lost:
                self._mark_down(address)
            by_id.update({e.episode_id: e for e in reply.episodes})
        merged = env_pb2.StepResponse()
        merged.episodes.extend(by_id[episode_id] for episode_id in actions if episode_id in by_id)
        return merged

    async def close(self, episode_ids: str | Sequence[str]) -> list[t.EpisodeSummary]:
        ids = [episode_ids] if isinstance(episode_ids, str) else list(episode_ids)
        groups = self._by_replica(ids)
        replies = await asyncio.gather(*(self._client(a).close(group) for a, group in groups.items()))
        for address, group in groups.items():
            self._forget(address, group)
        return [summary for summaries in replies for summary in summaries]

    def _forget(self, address: str, episode_ids: Sequence[str]) -> None:
        self.open_here[address] = max(0, self.open_here.get(address, 0) - len(episode_ids))
        for episode_id in episode_ids:
            self.home.pop(episode_id, None)

    # ------------------------------------------------------------ catalog (any healthy replica)

    async def _any(self) -> AsyncClient:
        await self._refresh()
        now = time.monotonic()
        live = [a for a in self.reported if self.down_until.get(a, 0.0) <= now] or list(self.reported)
        if not live:
            raise PalaestraError(
                grpc.StatusCode.UNAVAILABLE, "no replica is known (the directory lists none)"
            )
        return self._client(live[0])

    async def list_envs(self, tags: Sequence[str] = ()) -> list[t.EnvSpec]:
        return await (await self._any()).list_envs(tags)

    async def describe(self, env_id: str) -> t.EnvSpec:
        return await (await self._any()).describe(env_id)

    async def server_info(self) -> catalog_pb2.ServerInfo:
        return await (await self._any()).server_info()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(client.aclose() for client in self.clients.values()), return_exceptions=True)


def _names(addresses: Any) -> str:
    return ", ".join(sorted(addresses)) or "none"


def _directory_actor(name: str, namespace: str) -> Any:
    """The directory actor, joining the Ray cluster this machine belongs to if this process is not in one
    (`ray.init(address="auto")`: RAY_ADDRESS, else the cluster started here)."""
    try:
        import ray
    except ImportError:
        raise PalaestraError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "a directory address needs Ray: pip install 'palaestra[ray]' (or give replica addresses)",
        ) from None
    if not ray.is_initialized():
        try:
            ray.init(address="auto", namespace=namespace, log_to_driver=False)
        except ConnectionError as exc:
            raise PalaestraError(
                grpc.StatusCode.UNAVAILABLE,
                f"a directory address needs a running Ray cluster; none was found ({exc}): set RAY_ADDRESS "
                "or start one (`ray start --head`, then `palaestra cluster up`), or give replica addresses",
            ) from None
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise PalaestraError(
            grpc.StatusCode.NOT_FOUND,
            f"no directory {name!r} in Ray namespace {namespace!r} (start one with `palaestra cluster up`)",
        ) from None
