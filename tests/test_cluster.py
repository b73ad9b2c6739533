"""Scale-out on Ray: replicas on a simulated multi-node Ray cluster (`ray.cluster_utils.Cluster`, loopback).

One module-scoped cluster (a head and one more node, so two replicas); the tests run in file order and the
last ones change it (kill, drain, remove)."""

from __future__ import annotations

import collections
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

# Before Ray is imported: keep every Ray listener on loopback, and Ray's files in a directory of our own.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
_RAY_TMP = tempfile.mkdtemp(prefix="palaestra-ray-", dir="/tmp")  # short: Ray's socket paths are limited
os.environ["RAY_TMPDIR"] = _RAY_TMP
Path(_RAY_TMP, "ray").mkdir()

ray = pytest.importorskip("ray", reason="Ray is not installed (the [ray] extra; CI installs it with [dev])")
# Ray reads the loopback switch at its first import, which another test module may have done before this one.
setattr(importlib.import_module("ray._private.ray_constants"), "ENABLE_RAY_CLUSTER", False)  # noqa: B010
from ray.cluster_utils import Cluster  # noqa: E402

from palaestra.agents.client import AsyncClient, Client, PalaestraError  # noqa: E402
from palaestra.agents.multi import MultiAsyncClient  # noqa: E402
from palaestra.cluster.api import RayCluster  # noqa: E402
from palaestra.types import EpisodeStep  # noqa: E402

pytestmark = pytest.mark.timeout(240)

PER_REPLICA = {"max_episodes": 4096, "max_episodes_per_client": 4096}
DIRECTORY = "directory:palaestra-directory"  # the address of the replicas the directory lists


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, RayCluster]]:
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=nodes.address, namespace="palaestra", log_to_driver=False)
    control = RayCluster()
    try:
        control.up(overrides=PER_REPLICA, max_restarts=3)  # the first replica is killed three times
        yield nodes, control
    finally:
        try:
            control.down()
        finally:
            ray.shutdown()
            nodes.shutdown()
            shutil.rmtree(_RAY_TMP, ignore_errors=True)


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until the (simulated node's, so local) process is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs {timeout_s} s after ray.kill")


def _ok(steps: dict[str, EpisodeStep | PalaestraError]) -> list[EpisodeStep]:
    """The steps, each one a result (step_many raises on errors unless told not to)."""
    assert all(isinstance(s, EpisodeStep) for s in steps.values()), steps
    return [s for s in steps.values() if isinstance(s, EpisodeStep)]


def _multi(client: Client | AsyncClient) -> MultiAsyncClient:
    """The multi-replica view a Client or AsyncClient given several addresses or a directory is."""
    multi = client.aio if isinstance(client, Client) else client
    assert isinstance(multi, MultiAsyncClient), type(multi)
    return multi


def _healthy(control: RayCluster) -> list[dict[str, Any]]:
    return control.status(include_unhealthy=False)


def _settled(control: RayCluster, timeout_s: float = 60.0) -> None:
    """Wait until every replica has reported no open episodes (reports lag by up to a report interval),
    so that placement by free capacity starts from equal replicas."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snapshot = _healthy(control)
        if len(snapshot) == 2 and all(e["open_episodes"] == 0 for e in snapshot):
            return
        time.sleep(0.1)
    raise AssertionError(f"replicas still report open episodes after {timeout_s} s: {_healthy(control)}")


def test_one_replica_per_node_registered_with_capacity(cluster: tuple[Any, RayCluster]) -> None:
    _, control = cluster
    snapshot = _healthy(control)
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(snapshot) == 2
    assert {e["node_id"] for e in snapshot} == alive  # one per node, each on its own node
    for entry in snapshot:
        assert entry["address"].startswith("127.0.0.1:")
        assert entry["free_episodes"] == 4096 and entry["open_episodes"] == 0
        assert entry["serving"] and not entry["draining"]
        with Client(entry["address"]) as direct:  # each replica is a real server with the catalog
            assert "echo" in {spec.id for spec in direct.list_envs()}


def test_cli_status_lists_the_replicas(cluster: tuple[Any, RayCluster]) -> None:
    nodes, control = cluster
    env = dict(os.environ)  # the simulated cluster runs without token auth; RAY_TMPDIR is inherited
    command = [
        sys.executable,
        "-m",
        "palaestra",
        "cluster",
        "status",
        "--json",
        "--ray-address",
        nodes.address,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = {line.split('"')[3] for line in done.stdout.splitlines() if '"address"' in line}
    assert listed == {e["address"] for e in _healthy(control)}


def test_episodes_spread_by_free_capacity_and_groups_stay_together(cluster: tuple[Any, RayCluster]) -> None:
    _, control = cluster
    first, second = (e["address"] for e in _healthy(control))
    with Client(first) as other, Client(DIRECTORY, refresh_s=0.0) as client:
        # Another client holds 40 episodes on the first replica: it has 40 slots fewer.
        held = other.open("echo", count=40)
        control.wait_for(lambda s: {e["address"]: e["open_episodes"] for e in s}.get(first) == 40)
        groups = [client.open("echo", seed=i, count=4) for i in range(15)]
        placed = collections.Counter(_multi(client).replica_of(g[0].episode_id) for g in groups)
        for group in groups:  # a GRPO group lives on one replica
            assert len({_multi(client).replica_of(e.episode_id) for e in group}) == 1
        # Ten groups (40 episodes) go to the second replica before the two are level, then they alternate.
        assert placed[second] >= 10 and placed[first] >= 2, placed
        assert abs((placed[second] * 4) - (placed[first] * 4 + 40)) <= 4, placed
        ids = [e.episode_id for g in groups for e in g]
        steps = client.step_many({i: "hello" for i in ids})
        assert all(
            s.agents["agent"].observation.messages[-1].content == "You said: hello" for s in _ok(steps)
        )
        client.close(ids)
        other.close([e.episode_id for e in held])


def test_4096_echo_episodes_over_two_replicas(cluster: tuple[Any, RayCluster]) -> None:
    with Client(DIRECTORY, refresh_s=0.0) as client:
        ids = [e.episode_id for i in range(64) for e in client.open("echo", seed=i, count=64)]
        assert len(set(ids)) == 4096
        per_replica = collections.Counter(_multi(client).replica_of(i) for i in ids)
        assert sorted(per_replica.values()) == [2048, 2048], per_replica
        for word in ("one", "two"):
            steps = client.step_many({i: word for i in ids})  # one message to each replica
            assert len(steps) == 4096
            assert {s.agents["agent"].observation.messages[-1].content for s in _ok(steps)} == {
                f"You said: {word}"
            }
        summaries = client.close(ids)
        assert len(summaries) == 4096 and all(s.infra_failure is None for s in summaries)


def test_palaestra_eval_against_the_cluster_spreads_over_both_replicas(
    cluster: tuple[Any, RayCluster], tmp_path: Path
) -> None:
    """`palaestra eval --address directory:NAME`: the same command as against one server; its episodes
    run on both replicas (each replica counts the episodes it opened)."""
    from stub_openai import StubOpenAI
    from test_multi_client import say_the_word

    from palaestra.cli import main

    _, control = cluster
    _settled(control)  # reports that still count the previous test's episodes would skew placement
    before = {e["replica_id"]: e["opened"] for e in _healthy(control)}
    out = tmp_path / "eval.jsonl"
    with StubOpenAI(say_the_word) as stub:
        command = ["eval", "echo", "--base-url", stub.base_url, "--model", "stub", "--no-progress"]
        code = main([*command, "--episodes", "2", "--tasks", "6", "--out", str(out), "--address", DIRECTORY])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and all(r["infra_failure"] is None and r["return"] > 0 for r in records)

    def counted(snapshot: list[dict[str, Any]]) -> bool:  # the replicas' reports lag by a heartbeat
        return sum(e["opened"] - before.get(e["replica_id"], 0) for e in snapshot) == 12

    snapshot = control.wait_for(counted, timeout_s=60)
    assert all(e["opened"] > before[e["replica_id"]] for e in snapshot), (before, snapshot)


def test_a_command_in_another_process_finds_the_replicas_through_the_directory(
    cluster: tuple[Any, RayCluster],
) -> None:
    """`palaestra run --address directory:` in a process that is not in Ray yet: the client joins the
    cluster (RAY_ADDRESS) from its own event-loop thread, finds the directory and runs the episodes."""
    nodes, control = cluster
    _settled(control)  # every episode opened so far is in the reports
    before = sum(e["opened"] for e in _healthy(control))
    env = {**os.environ, "RAY_ADDRESS": nodes.address}  # what `ray.init(address="auto")` honours
    command = [sys.executable, "-m", "palaestra", "run", "echo", "--episodes", "4", "--address", "directory:"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    control.wait_for(lambda s: sum(e["opened"] for e in s) - before == 4, timeout_s=60)


def test_ppo_runs_against_the_cluster(cluster: tuple[Any, RayCluster]) -> None:
    pytest.importorskip("torch")
    from palaestra.agents.ppo import PPO, PPOConfig
    from palaestra.agents.vector import RemoteVectorEnv

    _settled(cluster[1])  # the previous test's 4,096 episodes may still count in the last reports
    with Client(DIRECTORY, refresh_s=0.0) as client:
        envs = RemoteVectorEnv(client, "gym/CartPole-v1", num_envs=8)
        try:
            trainer = PPO(envs, PPOConfig(total_steps=8 * 64 * 2, num_steps=64, seed=1))
            trainer.train()
            # One vector: its 8 episodes were placed together on one replica, stepped there with one call.
            assert _multi(client).vectors[envs.vector_id][1] == 8
        finally:
            envs.close()
    assert trainer.global_step >= 8 * 64 * 2
    assert len(trainer.episode_returns) > 10 and all(r > 0 for r in trainer.episode_returns)


def test_a_killed_replica_fails_only_its_episodes_and_rejoins(cluster: tuple[Any, RayCluster]) -> None:
    _, control = cluster
    before = {e["replica_id"]: e for e in _healthy(control)}
    victim = sorted(before)[0]
    victim_address = before[victim]["address"]
    with Client(DIRECTORY, refresh_s=0.0, down_s=60.0) as client:
        ids = [e.episode_id for i in range(8) for e in client.open("echo", seed=i, count=2)]
        on_victim = {i for i in ids if _multi(client).replica_of(i) == victim_address}
        assert 0 < len(on_victim) < len(ids)
        client.step_many({i: "before" for i in ids})

        control.kill(victim, restart=True)  # as a crash: the process is killed
        _wait_gone(before[victim]["pid"])  # ray.kill returns at once; the kill lands a moment later
        steps = client.step_many({i: "after" for i in ids}, raise_errors=False)
        for episode_id, step in steps.items():
            assert not isinstance(step, Exception), step
            if episode_id in on_victim:  # lost with its replica: an infrastructure failure, not reward 0
                assert step.done and step.infra_failure is not None
                assert step.infra_failure.source == "connection"
            else:
                assert step.infra_failure is None
                assert step.agents["agent"].observation.messages[-1].content == "You said: after"
        # New episodes go to the others while the victim is gone.
        fresh = client.open("echo", count=4)
        assert {_multi(client).replica_of(e.episode_id) for e in fresh} != {victim_address}
        client.close(ids + [e.episode_id for e in fresh])

    # Ray restarts it on its node; it reports again with a new address and one more incarnation.
    snapshot = control.wait_for(
        lambda s: any(e["replica_id"] == victim and e["address"] != victim_address for e in s), timeout_s=90
    )
    back = next(e for e in snapshot if e["replica_id"] == victim)
    assert back["incarnation"] == before[victim]["incarnation"] + 1
    assert back["node_id"] == before[victim]["node_id"]
    with Client(DIRECTORY, refresh_s=0.0) as client:
        groups = [client.open("echo", count=2) for _ in range(4)]
        assert back["address"] in {_multi(client).replica_of(g[0].episode_id) for g in groups}  # it rejoined
        client.close([e.episode_id for g in groups for e in g])


async def test_grpo_rollouts_complete_when_a_replica_dies_mid_run(cluster: tuple[Any, RayCluster]) -> None:
    """The GRPO rollout engine over the cluster; one replica is killed during the first turn. Its groups
    come back as infrastructure failures (dropped, never rewards); the other replica's groups finish with
    their rewards; the next rollout runs whole on the replicas left."""
    from palaestra.agents.rewards import drop_infra_failures
    from palaestra.agents.rollout import EpisodeRollout, RolloutEngine, TaskRequest
    from palaestra.types import Message

    _, control = cluster
    victim = control.wait_for(lambda s: len(s) == 2, timeout_s=90)[0]
    placement: dict[str, str] = {}

    async with MultiAsyncClient(DIRECTORY, refresh_s=0.0, down_s=60.0) as client:

        class SaysTheWordKillingAReplica:
            killed = False

            def fits(self, episode: EpisodeRollout) -> bool:
                return True

            async def act(self, episodes: Sequence[EpisodeRollout]) -> list[Message]:
                if not self.killed:
                    self.killed = True
                    placement.update(
                        {e.episode_id: _multi(client).replica_of(e.episode_id) for e in episodes}
                    )
                    control.kill(victim["replica_id"])
                    _wait_gone(victim["pid"])
                return [Message("assistant", e.messages[0].content.split("'")[1]) for e in episodes]

        engine = RolloutEngine(client, SaysTheWordKillingAReplica(), max_turns=2)
        groups = await engine.run("echo", [TaskRequest(seed=i) for i in range(6)], group_size=4)
        on_victim = [g for g in groups if placement[g[0].episode_id] == victim["address"]]
        assert 0 < len(on_victim) < len(groups)
        for group in groups:
            assert len({placement[e.episode_id] for e in group}) == 1  # a group on one replica
        for episode in (e for g in on_victim for e in g):
            assert episode.infra_failure is not None and episode.infra_failure.source == "connection"
        kept, dropped = drop_infra_failures(groups)
        assert dropped == 4 * len(on_victim) and len(kept) == len(groups) - len(on_victim)
        assert all(e.terminated and e.turn_components[0][0].value == 1.0 for g in kept for e in g)
        fresh = await engine.run("echo", [TaskRequest(seed=10 + i) for i in range(4)], group_size=4)
        assert drop_infra_failures(fresh)[1] == 0
    control.wait_for(  # Ray restarts it (a new address); the next test wants both replicas
        lambda s: any(
            e["replica_id"] == victim["replica_id"] and e["address"] != victim["address"] for e in s
        ),
        timeout_s=90,
    )


def test_drain_then_remove_while_a_run_goes_on(cluster: tuple[Any, RayCluster]) -> None:
    nodes, control = cluster
    control.wait_for(lambda s: len(s) == 2, timeout_s=90)
    leaving, staying = sorted(_healthy(control), key=lambda e: e["replica_id"])
    with Client(DIRECTORY, refresh_s=0.0) as client:
        ids = [e.episode_id for i in range(4) for e in client.open("echo", seed=i, count=2)]
        assert {_multi(client).replica_of(i) for i in ids} == {leaving["address"], staying["address"]}
        drain = [sys.executable, "-m", "palaestra", "cluster", "drain", leaving["replica_id"]]
        done = subprocess.run(
            [*drain, "--ray-address", nodes.address], capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-2000:]
        with Client(leaving["address"]) as direct:  # its server itself refuses new episodes, saying why
            with pytest.raises(PalaestraError) as refused:
                direct.open("echo")
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            assert "replica draining: open episodes on another replica" in refused.value.message
        fresh = [e.episode_id for _ in range(4) for e in client.open("echo", count=2)]
        assert {_multi(client).replica_of(i) for i in fresh} == {staying["address"]}  # no new episodes there
        with Client([leaving["address"], staying["address"]]) as fixed:  # no directory: refused, placed
            elsewhere = [e.episode_id for _ in range(3) for e in fixed.open("echo", count=2)]
            assert {_multi(fixed).replica_of(i) for i in elsewhere} == {staying["address"]}
            fixed.close(elsewhere)
        assert ray.get(control.replica(leaving["replica_id"]).ping.remote())["draining"]  # its own state
        listed = {e["replica_id"]: e for e in _healthy(control)}  # still healthy: its episodes are served
        assert listed[leaving["replica_id"]]["draining"] and not listed[staying["replica_id"]]["draining"]
        steps = client.step_many({i: "still" for i in ids + fresh})  # episodes on the drained one go on
        assert all(s.infra_failure is None for s in _ok(steps))
        client.close(ids)  # the run finishes its episodes there; removal waits for that

        # A drained replica that dies comes back (Ray); the answer to its first report drains it again.
        control.kill(leaving["replica_id"])
        _wait_gone(leaving["pid"])
        back = control.wait_for(
            lambda s: any(e["replica_id"] == leaving["replica_id"] and e["pid"] != leaving["pid"] for e in s),
            timeout_s=90,
        )
        address = next(e["address"] for e in back if e["replica_id"] == leaving["replica_id"])
        with Client(address) as direct, pytest.raises(PalaestraError) as refused:
            direct.open("echo")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        control.remove(leaving["replica_id"], timeout_s=30)
        assert [e["replica_id"] for e in control.status()] == [staying["replica_id"]]
        more = [e.episode_id for e in client.open("echo", count=2)]
        steps = client.step_many({i: "on" for i in fresh + more})
        assert all(s.infra_failure is None for s in _ok(steps))
        client.close(fresh + more)


async def test_async_view_with_fixed_addresses(cluster: tuple[Any, RayCluster]) -> None:
    _, control = cluster
    addresses = [e["address"] for e in _healthy(control)]
    async with AsyncClient(addresses) as client:
        episodes = [await client.open("echo", count=1) for _ in range(4)]
        ids = [e[0].episode_id for e in episodes]
        with pytest.raises(Exception, match="not opened through this client"):
            await client.step("no-such-episode", "x")
        steps = [await client.step(i, "hey") for i in ids]
        assert all(s.agents["agent"].observation.messages[-1].content == "You said: hey" for s in steps)
        await client.close(ids)
