"""Vectors over real gRPC: the columnar messages, RemoteVectorEnv on Gymnasium's vector API, and errors.

Each RemoteVectorEnv result is compared with Gymnasium's own vector environment run locally with the
same seeds and actions (the server steps the same `gym.make_vec` vectors), so the comparisons are exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from palaestra import wire
from palaestra.agents.client import Client, PalaestraError
from palaestra.agents.vector import RemoteVectorEnv
from palaestra.pluginmanager import load_plugins
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.v1 import env_pb2, env_pb2_grpc, types_pb2

pytestmark = pytest.mark.timeout(120)

CARTPOLE = "gym/CartPole-v1"
MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)


def local_vector(mode: AutoresetMode, num_envs: int) -> gym.vector.VectorEnv[Any, Any, Any]:
    """What the server builds: CartPole's numpy vector for next-step autoreset, else SyncVectorEnv."""
    if mode is AutoresetMode.NEXT_STEP:
        return gym.make_vec("CartPole-v1", num_envs, vectorization_mode="vector_entry_point")
    return gym.make_vec(
        "CartPole-v1", num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )


def assert_same_step(remote: tuple[Any, ...], local: tuple[Any, ...]) -> None:
    for got, expected in zip(remote[:4], local[:4], strict=True):
        np.testing.assert_array_equal(got, expected)
    infos, local_infos = remote[4], local[4]
    assert set(infos) == set(local_infos)
    if "final_obs" in local_infos:
        np.testing.assert_array_equal(infos["_final_obs"], local_infos["_final_obs"])
        for i in np.flatnonzero(local_infos["_final_obs"]):
            np.testing.assert_array_equal(infos["final_obs"][i], local_infos["final_obs"][i])


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_remote_vector_matches_gymnasium_in_every_autoreset_mode(
    server_address: str, mode: AutoresetMode
) -> None:
    remote, local = RemoteVectorEnv(server_address, CARTPOLE, 6, autoreset_mode=mode), local_vector(mode, 6)
    assert remote.metadata["autoreset_mode"] is mode
    obs, _ = remote.reset(seed=11)
    np.testing.assert_array_equal(obs, local.reset(seed=11)[0])
    rng = np.random.default_rng(0)
    ended = finals = 0
    for _ in range(150):
        actions = rng.integers(0, 2, 6)
        step, expected = remote.step(actions), local.step(actions)
        assert_same_step(step, expected)
        assert step[0].flags.writeable
        done = step[2] | step[3]
        ended += int(done.sum())
        finals += len(np.flatnonzero(step[4].get("_final_obs", [])))
        if mode is AutoresetMode.DISABLED and done.any():
            # Disabled: ended episodes wait for a reset of exactly them (reset_mask); the others go on.
            before = step[0]
            obs, _ = remote.reset(options={"reset_mask": done})
            np.testing.assert_array_equal(obs, local.reset(options={"reset_mask": done.copy()})[0])
            np.testing.assert_array_equal(obs[~done], before[~done])
    assert ended > 6  # episodes did end and restart within the run
    assert (finals == ended) if mode is AutoresetMode.SAME_STEP else finals == 0
    remote.close()
    local.close()


def test_unseeded_reset_continues_each_random_stream(server_address: str) -> None:
    for mode in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        remote, local = (
            RemoteVectorEnv(server_address, CARTPOLE, 4, autoreset_mode=mode),
            local_vector(mode, 4),
        )
        first, _ = remote.reset(seed=5)
        local.reset(seed=5)
        remote.step(np.ones(4, dtype=np.int64))
        local.step(np.ones(4, dtype=np.int64))
        again, _ = remote.reset()  # no seed: the streams go on, no fresh episodes from a new seed
        np.testing.assert_array_equal(again, local.reset()[0])
        assert not np.array_equal(again, first)
        reseeded, _ = remote.reset(seed=5)
        np.testing.assert_array_equal(reseeded, first)
        remote.close()


def test_reset_mask_resets_only_the_masked_episodes(server_address: str) -> None:
    remote = RemoteVectorEnv(server_address, CARTPOLE, 4, autoreset_mode=AutoresetMode.SAME_STEP)
    local = local_vector(AutoresetMode.SAME_STEP, 4)
    remote.reset(seed=2)
    local.reset(seed=2)
    for _ in range(3):
        stepped = remote.step(np.zeros(4, dtype=np.int64))[0]
        local.step(np.zeros(4, dtype=np.int64))
    mask = np.array([True, False, True, False])
    obs, _ = remote.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs, local.reset(options={"reset_mask": mask.copy()})[0])
    np.testing.assert_array_equal(obs[~mask], stepped[~mask])
    remote.close()


WRAPPERS: list[Callable[[Any], Any]] = [
    gym.wrappers.vector.RecordEpisodeStatistics,
    gym.wrappers.vector.NormalizeObservation,
    gym.wrappers.vector.NormalizeReward,
    lambda env: gym.wrappers.vector.ClipReward(env, min_reward=0.0, max_reward=0.5),
    gym.wrappers.vector.DictInfoToList,
    lambda env: gym.wrappers.vector.TransformObservation(env, lambda obs: obs * 2.0),
]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_gymnasium_vector_wrappers_accept_it(server_address: str, mode: AutoresetMode) -> None:
    accepted = 0
    for wrap in WRAPPERS:
        try:
            local = wrap(local_vector(mode, 4))
        except ValueError as refused:  # Gymnasium's own vectors are refused too (same-step): so is ours
            with pytest.raises(ValueError, match="autoreset_mode") as ours:
                wrap(RemoteVectorEnv(server_address, CARTPOLE, 4, autoreset_mode=mode))
            assert str(ours.value).split(",")[0] == str(refused).split(",")[0]
            continue
        accepted += 1
        remote = wrap(RemoteVectorEnv(server_address, CARTPOLE, 4, autoreset_mode=mode))
        np.testing.assert_allclose(remote.reset(seed=3)[0], local.reset(seed=3)[0])
        for _ in range(40):
            actions = np.ones(4, dtype=np.int64)
            got, expected = remote.step(actions), local.step(actions)
            for a, b in zip(got[:4], expected[:4], strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-6)
            done = got[2] | got[3]
            if mode is AutoresetMode.DISABLED and done.any():
                remote.reset(options={"reset_mask": done})
                local.reset(options={"reset_mask": done.copy()})
        if isinstance(remote, gym.wrappers.vector.RecordEpisodeStatistics):
            assert remote.return_queue
            if mode is AutoresetMode.DISABLED:
                # Gymnasium's SyncVectorEnv pops reset_mask from the caller's options, so the wrapper
                # around it then clears every episode's statistics; ours leaves the options alone.
                # CartPole pays 1 per step: each recorded return is its episode's length.
                assert list(remote.return_queue) == [float(n) for n in remote.length_queue]
            else:
                assert list(remote.return_queue) == list(local.return_queue)
        remote.close()
    assert accepted >= (len(WRAPPERS) if mode is AutoresetMode.NEXT_STEP else 3)


def test_infos_come_back_per_episode(server_address: str) -> None:
    # FrozenLake has per-step infos ("prob"): Gymnasium's dict of arrays with `_key` masks.
    remote = RemoteVectorEnv(server_address, "gym/FrozenLake-v1", 3, autoreset_mode=AutoresetMode.SAME_STEP)
    local = gym.make_vec(
        "FrozenLake-v1",
        3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    _, info = remote.reset(seed=1)
    assert set(info) == set(local.reset(seed=1)[1])
    for _ in range(20):
        got, expected = remote.step(np.array([1, 2, 1])), local.step(np.array([1, 2, 1]))
        assert_same_step(got, expected)
        np.testing.assert_array_equal(got[4]["prob"], expected[4]["prob"])
        np.testing.assert_array_equal(got[4]["_prob"], expected[4]["_prob"])
    remote.close()


# ------------------------------------------------------------ the wire, errors, quotas


def send(client: Client, **request: Any) -> env_pb2.SessionResponse:
    return client.send(env_pb2.SessionRequest(**request))


def open_vector(client: Client, env_id: str = CARTPOLE, num_envs: int = 4, **kw: Any) -> env_pb2.VectorResult:
    return send(client, vector_open=env_pb2.VectorOpenRequest(env_id=env_id, num_envs=num_envs, **kw)).vector


def test_columnar_messages_on_the_wire(client: Client) -> None:
    opened = open_vector(client, num_envs=5, seed=0)
    obs = wire.tensor_from_proto(opened.observations)
    assert obs.shape == (5, 4) and obs.dtype == np.float32 and opened.vector_id
    actions = wire.tensor_to_proto(np.array([0, 1, 0, 1, 1]))
    stepped = send(client, vector_step=env_pb2.VectorStepRequest(vector_id=opened.vector_id, actions=actions))
    result = stepped.vector
    assert wire.tensor_from_proto(result.rewards).tolist() == [1.0] * 5
    assert wire.tensor_from_proto(result.terminated).dtype == np.bool_
    assert result.step_index == 1 and not result.infos  # CartPole has no infos: none travel
    closed = send(client, vector_close=env_pb2.VectorCloseRequest(vector_id=opened.vector_id)).vector_close
    assert closed.steps == 1
    with pytest.raises(PalaestraError) as error:
        send(client, vector_step=env_pb2.VectorStepRequest(vector_id=opened.vector_id, actions=actions))
    assert error.value.code is grpc.StatusCode.NOT_FOUND


def test_bad_requests_fail_as_a_whole_saying_what_was_expected(client: Client) -> None:
    vector_id = open_vector(client).vector_id

    def step(actions: np.ndarray) -> PalaestraError:
        with pytest.raises(PalaestraError) as error:
            send(
                client,
                vector_step=env_pb2.VectorStepRequest(
                    vector_id=vector_id, actions=wire.tensor_to_proto(actions)
                ),
            )
        return error.value

    out_of_space = step(np.array([0, 1, 2, 0]))
    assert out_of_space.code is grpc.StatusCode.INVALID_ARGUMENT and "episodes [2]" in str(out_of_space)
    assert "Discrete" in str(out_of_space) or "discrete" in str(out_of_space)
    assert step(np.array([0, 1])).code is grpc.StatusCode.INVALID_ARGUMENT  # one row per episode
    assert step(np.array([0.0, 1.0, 0.0, 1.0])).code is grpc.StatusCode.INVALID_ARGUMENT  # floats
    malformed = env_pb2.VectorStepRequest(vector_id=vector_id)
    malformed.actions.dtype, malformed.actions.data = types_pb2.DTYPE_INT64, b"\x00" * 7
    malformed.actions.shape.append(4)
    with pytest.raises(PalaestraError, match="malformed actions"):
        send(client, vector_step=malformed)
    # Nothing was stepped by the refused requests, and the vector goes on.
    ok = send(
        client,
        vector_step=env_pb2.VectorStepRequest(
            vector_id=vector_id, actions=wire.tensor_to_proto(np.zeros(4, int))
        ),
    )
    assert ok.vector.step_index == 1
    with pytest.raises(PalaestraError) as error:
        open_vector(client, env_id="echo/text")  # chat and text episodes keep the per-episode form
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT and "StepRequest" in str(error.value)
    with pytest.raises(PalaestraError) as error:
        open_vector(client, num_envs=0)
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(PalaestraError) as error:
        open_vector(client, env_id="gym/NoSuchEnv-v0")
    assert error.value.code is grpc.StatusCode.NOT_FOUND


def test_box_actions_are_checked_per_row(client: Client) -> None:
    vector_id = open_vector(client, env_id="gym/Pendulum-v1", num_envs=3).vector_id
    good = np.array([[0.5], [-2.0], [1.0]], dtype=np.float32)
    request = env_pb2.VectorStepRequest(vector_id=vector_id, actions=wire.tensor_to_proto(good))
    assert wire.tensor_from_proto(send(client, vector_step=request).vector.observations).shape == (3, 3)
    bad = np.array([[0.5], [9.0], [np.nan]], dtype=np.float32)
    request = env_pb2.VectorStepRequest(vector_id=vector_id, actions=wire.tensor_to_proto(bad))
    with pytest.raises(PalaestraError, match=r"episodes \[1, 2\]"):
        send(client, vector_step=request)


def test_disabled_autoreset_refuses_to_step_ended_episodes(client: Client) -> None:
    vector = RemoteVectorEnv(client, CARTPOLE, 2, autoreset_mode=AutoresetMode.DISABLED)
    vector.reset(seed=0)
    while True:
        _, _, terminated, truncated, _ = vector.step(np.ones(2, dtype=np.int64))
        if (terminated | truncated).any():
            break
    with pytest.raises(PalaestraError) as error:
        vector.step(np.ones(2, dtype=np.int64))
    assert error.value.code is grpc.StatusCode.FAILED_PRECONDITION and "reset_mask" in str(error.value)
    vector.reset(options={"reset_mask": terminated | truncated})
    vector.step(np.ones(2, dtype=np.int64))  # goes on after the reset
    vector.close()


def test_a_vector_too_large_for_one_reply_is_refused() -> None:
    plugins = load_plugins(["vector_plugin_for_tests"], ["code", "math", "games", "tools"])
    with (
        ServerThread(ServerConfig(port=0, max_message_mb=1), plugins) as server,
        Client(server.address) as client,
    ):
        assert server.server is not None
        with pytest.raises(PalaestraError) as error:
            open_vector(client, env_id="vectortest/wide", num_envs=1024)  # 2 MiB of observations per reply
        assert error.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "fewer episodes" in str(error.value)
        assert len(server.server.runtime.vectors) == 0
        open_vector(client, env_id="vectortest/wide", num_envs=256)  # half a MiB: fits


def test_vectors_count_against_quotas_and_close_with_their_stream(
    start_server: Callable[..., ServerThread],
) -> None:
    server = start_server(max_episodes_per_client=8)
    assert server.server is not None
    vectors = server.server.runtime.vectors
    with Client(server.address) as client:
        open_vector(client, num_envs=6)
        with pytest.raises(PalaestraError) as error:
            open_vector(client, num_envs=3)
        assert error.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(vectors) == 1
    # The stream ended: its vector was closed and its quota freed.
    with Client(server.address) as client:
        for _ in range(100):
            if not len(vectors):
                break
            time.sleep(0.05)
        assert len(vectors) == 0
        open_vector(client, num_envs=8)


@pytest.fixture(scope="module")
def failing_server() -> Any:
    plugins = load_plugins(["vector_plugin_for_tests"], ["code", "math", "games", "tools"])
    with ServerThread(ServerConfig(port=0), plugins) as thread:
        yield thread


@pytest.mark.parametrize(("row0", "why"), [(1, "RuntimeError in step: the simulator crashed"), (2, "3 rows")])
def test_a_failing_vector_environment_is_an_infrastructure_failure(
    failing_server: ServerThread, row0: int, why: str
) -> None:
    with Client(failing_server.address) as client:
        vector_id = open_vector(client, env_id="vectortest/failing", num_envs=3).vector_id

        def step(first: int) -> env_pb2.SessionResponse:
            actions = wire.tensor_to_proto(np.array([first, 0, 0]))
            return send(client, vector_step=env_pb2.VectorStepRequest(vector_id=vector_id, actions=actions))

        assert wire.tensor_from_proto(step(0).vector.rewards).tolist() == [1.0, 1.0, 1.0]
        failed = step(row0).vector
        assert failed.infra_failure.source == "environment" and why in failed.infra_failure.message
        assert not failed.HasField("rewards")  # no reward is reported for a failure
        with pytest.raises(PalaestraError) as error:
            step(0)
        assert error.value.code is grpc.StatusCode.FAILED_PRECONDITION
        closed = send(client, vector_close=env_pb2.VectorCloseRequest(vector_id=vector_id)).vector_close
        assert closed.steps == 1


def test_vectors_on_the_unary_mirror(server_address: str) -> None:
    with grpc.insecure_channel(server_address) as channel:
        stub = env_pb2_grpc.EnvServiceStub(channel)
        opened = stub.VectorOpen(env_pb2.VectorOpenRequest(env_id=CARTPOLE, num_envs=3, seed=4))
        actions = wire.tensor_to_proto(np.array([1, 0, 1]))
        stepped = stub.VectorStep(env_pb2.VectorStepRequest(vector_id=opened.vector_id, actions=actions))
        local = gym.make_vec("CartPole-v1", 3, vectorization_mode="vector_entry_point")
        local.reset(seed=4)
        np.testing.assert_array_equal(
            wire.tensor_from_proto(stepped.observations), local.step(np.array([1, 0, 1]))[0]
        )
        with pytest.raises(grpc.RpcError) as error:
            stub.VectorStep(
                env_pb2.VectorStepRequest(
                    vector_id=opened.vector_id, actions=wire.tensor_to_proto(np.array([5, 0, 1]))
                )
            )
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert stub.VectorClose(env_pb2.VectorCloseRequest(vector_id=opened.vector_id)).steps == 1


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_an_environment_without_a_vector_step_is_served_per_episode(
    failing_server: ServerThread, mode: AutoresetMode
) -> None:
    """The per-episode fallback: the same columns, autoresets, infos and seeds as Gymnasium's
    SyncVectorEnv over the same environment run locally."""
    from vector_plugin_for_tests import Walk

    remote = RemoteVectorEnv(failing_server.address, "vectortest/walk", 3, autoreset_mode=mode)
    local = gym.vector.SyncVectorEnv([Walk] * 3, autoreset_mode=mode)
    (obs, infos), (local_obs, local_infos) = remote.reset(seed=7), local.reset(seed=7)
    np.testing.assert_array_equal(obs, local_obs)
    np.testing.assert_array_equal(infos["start"], local_infos["start"])
    rng = np.random.default_rng(1)
    ended = 0
    for _ in range(40):
        actions = rng.integers(0, 2, 3)
        step, expected = remote.step(actions), local.step(actions)
        assert_same_step(step, expected)
        for key in set(expected[4]) - {"final_obs", "final_info"}:
            np.testing.assert_array_equal(step[4][key], expected[4][key])
        done = step[2] | step[3]
        ended += int(done.sum())
        if mode is AutoresetMode.DISABLED and done.any():
            obs, _ = remote.reset(options={"reset_mask": done})
            np.testing.assert_array_equal(obs, local.reset(options={"reset_mask": done.copy()})[0])
    assert ended > 3 and (step[2] | step[3]).dtype == np.bool_
    again, _ = remote.reset()  # no seed: each episode's random stream goes on
    np.testing.assert_array_equal(again, local.reset()[0])
    remote.close()
    local.close()


def test_the_fallback_truncates_at_the_declared_step_limit(failing_server: ServerThread) -> None:
    from palaestra.server.episodes import SERVER_TRUNCATION

    remote = RemoteVectorEnv(
        failing_server.address, "vectortest/walk-limited", 2, autoreset_mode=AutoresetMode.SAME_STEP
    )
    remote.reset(seed=0)
    ones = np.ones(2, dtype=np.int64)
    _, _, terminated, truncated, infos = remote.step(ones)
    assert not (terminated | truncated).any() and "final_obs" not in infos
    obs, rewards, terminated, truncated, infos = remote.step(ones)  # position 2 of 3: cut by the limit
    assert truncated.tolist() == [True, True] and not terminated.any() and rewards.tolist() == [2.0, 2.0]
    assert infos["_final_obs"].tolist() == [True, True]
    assert infos["final_info"][SERVER_TRUNCATION].tolist() == [2, 2]  # Gymnasium's dict of arrays
    assert obs[:, 0].tolist() == [0.0, 0.0]  # reset in the same step
    remote.close()


def test_the_fallback_refuses_as_a_whole_or_stops(failing_server: ServerThread) -> None:
    """An episode that refuses (InvalidAction) before any row ran: INVALID_ARGUMENT, the vector goes on.
    After other rows ran: INVALID_ARGUMENT, and the vector refuses to go on (its rows moved unseen)."""
    remote = RemoteVectorEnv(failing_server.address, "vectortest/walk", 3)
    remote.reset(seed=0)
    with pytest.raises(PalaestraError) as first_row:
        remote.reset(seed=10, options={"refuse_seed": 10})
    assert first_row.value.code is grpc.StatusCode.INVALID_ARGUMENT and "episode 0" in str(first_row.value)
    remote.step(np.ones(3, dtype=np.int64))  # nothing was reset: it goes on
    with pytest.raises(PalaestraError) as later_row:
        remote.reset(seed=10, options={"refuse_seed": 11})
    assert later_row.value.code is grpc.StatusCode.INVALID_ARGUMENT and "episode 1" in str(later_row.value)
    with pytest.raises(PalaestraError, match="close it"):
        remote.step(np.ones(3, dtype=np.int64))
    remote.close()


def test_remote_vector_env_raises_infra_failures_and_reopens(failing_server: ServerThread) -> None:
    from palaestra.agents.gym import InfraFailureError

    remote = RemoteVectorEnv(failing_server.address, "vectortest/failing", 3)
    remote.reset()
    failed_id = remote.vector_id
    with pytest.raises(InfraFailureError, match="the simulator crashed"):
        remote.step(np.array([1, 0, 0]))  # never a reward: the failure raises
    assert remote.vector_id == ""  # forgotten, and closed on the server
    assert failed_id not in failing_server.server.runtime.vectors._vectors  # type: ignore[union-attr]
    remote.reset()  # a new vector
    assert remote.vector_id != failed_id
    assert remote.step(np.zeros(3, dtype=np.int64))[1].tolist() == [1.0, 1.0, 1.0]
    remote.close()
