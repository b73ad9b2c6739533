"""The trajectory store: real servers record real episodes through the episode-finished hook; exports
are read back with pyarrow and Hugging Face `datasets`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from palaestra import types as t
from palaestra.agents.client import Client
from palaestra.plugins.tools.reference import scripted_policy
from palaestra.server.app import ServerThread
from palaestra.server.config import ConfigError, ServerConfig, load_config
from palaestra.store import RunRecorder, StoreRecorder, StoreSettings, TrajectoryStore, export
from palaestra.store.recorder import episode_row

pytestmark = pytest.mark.timeout(120)


def _store_config(path: Path, **store: Any) -> dict[str, Any]:
    return {"store": {"path": str(path), "flush_interval_s": 0.05, **store}}


def _play_reference(client: Client, first: t.EpisodeStep) -> t.EpisodeStep:
    """Drive a tools episode with the domain's scripted reference agent to its end."""
    policy = scripted_policy("tools/shop")
    history = [first.result.observation]
    step = first
    while not step.done:
        step = client.step(step.episode_id, policy(history))
        history.append(step.result.observation)
    return step


@pytest.fixture
def recorded(tmp_path: Path, start_server: Callable[..., ServerThread]) -> dict[str, Any]:
    """A GRPO-style group of two tools/shop episodes (one played by the reference agent, one that just
    says hello), recorded by a server with a store and a token."""
    server = start_server(auth_token="tok", **_store_config(tmp_path / "t.sqlite"))
    with Client(server.address, token="tok") as client:
        good, bad = client.open("tools/shop", seed=3, count=2)
        _play_reference(client, good)
        step = bad
        while not step.done:
            step = client.step(step.episode_id, "Hello! I cannot look that up.")
        client.close([good.episode_id, bad.episode_id])
    assert server.server is not None
    assert server.server.extras.recorder is not None
    assert server.server.extras.recorder.flush()
    return {"path": tmp_path / "t.sqlite", "good": good.episode_id, "bad": bad.episode_id, "server": server}


def test_a_finished_episode_is_recorded_with_everything(recorded: dict[str, Any]) -> None:
    with TrajectoryStore(recorded["path"]) as store:
        good = store.episode(recorded["good"])
        bad = store.episode(recorded["bad"])
    assert good is not None and bad is not None
    assert good["env_id"] == "tools/shop" and good["seed"] == 3
    assert good["group_id"] and good["group_id"] == bad["group_id"]  # one open request: one group
    assert good["principal"] == "default"  # the token's principal
    assert good["opened_at"] <= good["finished_at"] and good["env_seconds"] > 0
    assert good["terminated"] and good["infra_source"] is None and good["close_reason"] == "client"
    assert good["reward"] > bad["reward"]
    trajectory = good["trajectory"]
    assert trajectory[0]["step"] == 0 and not trajectory[0]["actions"]
    first_messages = trajectory[0]["messages"]["agent"]
    assert [m["role"] for m in first_messages][:2] == ["system", "user"]
    calls = [
        call
        for entry in trajectory
        for action in entry["actions"].values()
        if isinstance(action, dict)
        for call in action["tool_calls"]
    ]
    assert calls and all(json.loads(c["arguments"]) is not None for c in calls)  # arguments, not names only
    tool_messages = [m for e in trajectory for m in e["messages"].get("agent", []) if m["role"] == "tool"]
    assert {m["tool_call_id"] for m in tool_messages} >= {c["id"] for c in calls}
    components = [c for e in trajectory for c in e["components"].get("agent", [])]
    assert {"state_match", "checklist"} <= {c["name"] for c in components}
    assert all(c["status"] in ("ok", "timeout", "error", "not_run") for c in components)
    items = [i for e in trajectory for i in e["checklist"].get("agent", [])]
    assert items and any(i["passed"] and i["evidence"] for i in items)
    totals = {c["name"]: c for c in good["agents"][0]["components"]}
    assert totals["state_match"]["total"] == 1.0


def test_exports_sft_and_preference_pairs(recorded: dict[str, Any], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is the [store] extra")
    datasets = pytest.importorskip("datasets", reason="datasets is the [store] extra")
    with TrajectoryStore(recorded["path"]) as store:
        sft = list(export.records(store, "sft"))
        assert {r["episode_id"] for r in sft} == {recorded["good"], recorded["bad"]}
        best = [r for r in export.records(store, "sft", min_reward=0.5)]
        assert [r["episode_id"] for r in best] == [recorded["good"]]
        chat = best[0]["messages"]
        assert chat[0]["role"] == "system" and chat[1]["role"] == "user"
        assert any(m["role"] == "assistant" and m["tool_calls"] for m in chat)
        # order: each tool result follows the assistant message that called it
        for i, message in enumerate(chat):
            if message["role"] == "tool":
                callers = [
                    m for m in chat[:i] if any(c["id"] == message["tool_call_id"] for c in m["tool_calls"])
                ]
                assert callers

        [pair] = export.records(store, "preferences")
        assert pair["chosen_episode_id"] == recorded["good"]
        assert pair["rejected_episode_id"] == recorded["bad"]
        assert pair["score_chosen"] > pair["score_rejected"]
        assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
        assert pair["chosen"][0]["role"] == "assistant" and pair["rejected"][0]["role"] == "assistant"

        for kind, expected in (("episodes", 2), ("sft", 2), ("preferences", 1)):
            out = tmp_path / f"{kind}.parquet"
            assert export.to_parquet(store, out, kind) == expected
            assert pq.read_table(out).num_rows == expected
        dataset = export.to_dataset(store, "preferences")
        assert isinstance(dataset, datasets.Dataset)
        assert len(dataset) == 1 and {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
        assert dataset[0]["chosen"][0]["tool_calls"][0]["name"]
        assert len(export.to_dataset(store, "sft", env_id="tools/shop")) == 2
        assert len(export.to_dataset(store, "sft", env_id="echo/echo")) == 0


def test_runs_tag_episodes_before_or_after_they_are_written(recorded: dict[str, Any]) -> None:
    with RunRecorder(recorded["path"], kind="eval", model="tiny-llm", tags={"step": 100}) as recorder:
        recorder.add([recorded["good"], "not-written-yet"])
        run = recorder.run_id
    with TrajectoryStore(recorded["path"]) as store:
        assert [e["episode_id"] for e in store.episodes(run_id=run)] == [recorded["good"]]
        [listed] = [r for r in store.runs() if r["run_id"] == run]
        assert listed["model"] == "tiny-llm" and listed["tags"] == {"step": 100} and listed["episodes"] == 2
        assert store.runs_of([recorded["good"]])[recorded["good"]][0]["model"] == "tiny-llm"


def _summary(episode_id: str, env_id: str = "echo/echo", failure: bool = False) -> t.EpisodeSummary:
    return t.EpisodeSummary(
        episode_id=episode_id,
        env_id=env_id,
        steps=1,
        agents=[t.AgentSummary("agent", 1.0, [t.ComponentTotal("outcome", t.RewardKind.OUTCOME, 1.0, 1, 0)])],
        infra_failure=t.InfraFailure("sandbox", "engine gone") if failure else None,
        terminated=not failure,
        truncated=False,
        wall_seconds=0.1,
        env_seconds=0.01,
        close_reason="client",
    )


def test_each_episode_an_id_plays_between_resets_is_recorded(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """A Gymnasium wrapper resets one episode id again and again: each episode it played is a row of its
    own (`<id>/<n>`, close reason "reset"), with its own steps, return and trajectory; the id's own row is
    the last one, written when it closes."""
    server = start_server(**_store_config(tmp_path / "reset.sqlite"))
    with Client(server.address) as client:
        [first] = client.open("echo/text", seed=0, options={"turns": 8})
        word = first.result.observation.messages[0].content.split("'")[1]
        client.step(first.episode_id, "wrong")
        client.step(first.episode_id, word)  # said: terminated, reward 1 over 2 steps
        client.reset(first.episode_id, seed=1)
        for _ in range(3):
            client.step(first.episode_id, "still wrong")
        client.close(first.episode_id)
    assert server.server is not None and server.server.extras.recorder is not None
    assert server.server.extras.recorder.flush()
    with TrajectoryStore(tmp_path / "reset.sqlite") as store:
        ended = store.episode(f"{first.episode_id}/1")
        last = store.episode(first.episode_id)
    assert ended is not None and last is not None
    assert (ended["steps"], ended["reward"], ended["terminated"], ended["close_reason"]) == (
        2,
        1.0,
        True,
        "reset",
    )
    assert (last["steps"], last["reward"], last["terminated"], last["close_reason"]) == (
        3,
        0.0,
        False,
        "client",
    )
    assert [e["step"] for e in ended["trajectory"]] == [0, 1, 2]  # its reset, then its steps
    assert [e["step"] for e in last["trajectory"]] == [0, 1, 2, 3]
    assert ended["group_id"] == last["group_id"] and ended["opened_at"] <= last["opened_at"]


def test_retention_by_age_and_count(tmp_path: Path) -> None:
    with TrajectoryStore(tmp_path / "r.sqlite") as store:
        now = time.time()
        store.insert_rows(
            [episode_row(_summary(f"old{i}"), [], {}, now - 10 * 86400 - i) for i in range(3)]
            + [episode_row(_summary(f"new{i}"), [], {}, now - i) for i in range(4)]
        )
        assert store.apply_retention(max_age_days=7) == 3
        assert store.apply_retention(max_episodes=2) == 2
        assert sorted(e["episode_id"] for e in store.episodes()) == ["new0", "new1"]


def test_the_recorder_batches_retains_and_survives_odd_values(tmp_path: Path) -> None:
    settings = StoreSettings(
        path=str(tmp_path / "w.sqlite"),
        batch_size=4,
        flush_interval_s=0.05,
        max_episodes=5,
        retention_interval_s=0,
    )
    recorder = StoreRecorder(settings)
    try:
        np = pytest.importorskip("numpy")
        odd = {"seed": 1, "options": {"weights": np.arange(3), "tags": {"a"}}, "group": "g"}
        for i in range(9):
            recorder.submit(_summary(f"e{i}"), [{"step": 0, "info": {"array": np.ones(2)}}], odd)
        assert recorder.flush()
        assert recorder.written == 9 and recorder.dropped == 0
        assert recorder.store.count() == 5  # max_episodes keeps the newest
        [latest] = recorder.store.episodes(limit=1, with_trajectory=True)
        assert latest["options"] == {"weights": [0, 1, 2], "tags": ["a"]}
        assert latest["trajectory"][0]["info"]["array"] == [1.0, 1.0]
    finally:
        recorder.close()


def test_infrastructure_failures_are_recorded_but_never_training_data(tmp_path: Path) -> None:
    with TrajectoryStore(tmp_path / "f.sqlite") as store:
        entry = {
            "step": 1,
            "actions": {"agent": "hi"},
            "messages": {"agent": [{"role": "user", "content": "x"}]},
        }
        store.insert_rows(
            [
                episode_row(_summary("ok"), [entry], {"group": "g"}, time.time()),
                episode_row(_summary("failed", failure=True), [entry], {"group": "g"}, time.time()),
            ]
        )
        assert store.episode("failed")["infra_source"] == "sandbox"  # type: ignore[index]
        assert [r["episode_id"] for r in export.records(store, "sft")] == ["ok"]
        assert list(export.records(store, "preferences")) == []
        assert store.curve("echo/echo")[0]["episode_id"] == "ok"  # curves leave failures out


def test_store_and_dashboard_tables_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[store]\npath = "x.sqlite"\nmax_age_days = 30\n[dashboard]\nenabled = true\nport = 0\n')
    config = load_config(path, environ={})
    assert config.store == {"path": "x.sqlite", "max_age_days": 30}
    assert config.dashboard == {"enabled": True, "port": 0}
    path.write_text("[store]\nretention = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key store.retention; known keys: .*max_age_days"):
        load_config(path, environ={})
    path.write_text("[dashboard]\nport = 99999\n")
    with pytest.raises(ConfigError, match=r"dashboard\.port must be between 0 and 65535"):
        load_config(path, environ={})
    path.write_text('[store]\nbatch_size = "many"\n')
    with pytest.raises(ConfigError, match=r"store\.batch_size must be int"):
        load_config(path, environ={})


def test_without_a_store_path_nothing_is_recorded(start_server: Callable[..., ServerThread]) -> None:
    server = start_server()
    assert server.server is not None
    assert server.server.extras.recorder is None and server.server.extras.dashboard is None
    assert not server.server.runtime.record_trajectories  # no per-step trajectory cost either


def test_the_command_line_records_and_exports(tmp_path: Path) -> None:
    """`palaestra run --store` records the embedded server's episodes; `palaestra store` reads them."""
    store = tmp_path / "cli.sqlite"
    palaestra = [sys.executable, "-m", "palaestra"]
    run = [*palaestra, "run", "echo", "--episodes", "3", "--transcript", "0", "--store", str(store)]
    subprocess.run(run, check=True, capture_output=True, timeout=120)
    with TrajectoryStore(store) as opened:
        assert opened.count("echo") == 3
    stats = subprocess.run(
        [*palaestra, "store", "stats", "--store", str(store)], capture_output=True, timeout=60
    )
    assert json.loads(stats.stdout)["environments"][0]["episodes"] == 3
    out = tmp_path / "sft.jsonl"
    export_cli = [*palaestra, "store", "export", "--store", str(store), "--kind", "sft", "--out", str(out)]
    subprocess.run(export_cli, check=True, capture_output=True, timeout=60)
    assert len(out.read_text().splitlines()) == 3
    missing = subprocess.run(
        [*palaestra, "store", "stats", "--store", str(tmp_path / "nope.sqlite")],
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode != 0 and b"no trajectory store at" in missing.stderr


def test_an_unusable_store_path_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"store\.path .*cannot open the trajectory store"):
        ServerThread(ServerConfig(port=0, store={"path": str(blocker / "t.sqlite")})).start()
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="cannot open the trajectory store"):
        ServerThread(ServerConfig(port=0, store={"path": str(corrupt)})).start()


def test_a_store_run_tags_every_episode_of_its_server(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """The embedded server of an evaluation or a training job: [store] run tags all its episodes."""
    run = {"kind": "train", "model": "tiny-gpt", "tags": {"lr": 0.001}}
    server = start_server(**_store_config(tmp_path / "run.sqlite", run=run))
    with Client(server.address) as client:
        group = client.open("echo", count=3)
        client.close([e.episode_id for e in group])
    assert server.server is not None and server.server.extras.recorder is not None
    assert server.server.extras.recorder.flush()
    with TrajectoryStore(tmp_path / "run.sqlite") as store:
        [listed] = store.runs()
        assert listed["kind"] == "train" and listed["model"] == "tiny-gpt" and listed["episodes"] == 3
        assert {e["episode_id"] for e in store.episodes(run_id=listed["run_id"])} == {
            e.episode_id for e in group
        }
    with pytest.raises(ValueError, match=r"store\.run must be a table with kind"):
        StoreSettings.from_table({"path": "x", "run": {"model": "no kind"}})


@pytest.mark.parametrize("autoreset_mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_episodes_are_recorded_as_summaries(
    start_server: Callable[..., ServerThread], tmp_path: Path, autoreset_mode: AutoresetMode
) -> None:
    """A vector's finished episodes reach the store (return, length, how they ended; no steps), each as
    long as the client saw it, whichever autoreset mode; those still running when the vector closes are
    reported as cut short by the client."""
    from palaestra.agents.vector import RemoteVectorEnv

    server = start_server(**_store_config(tmp_path / "vec.sqlite"))
    envs = RemoteVectorEnv(server.address, "gym/CartPole-v1", 3, autoreset_mode=autoreset_mode)
    envs.reset(seed=5)
    lengths: list[int] = []
    running, resetting = np.zeros(3, dtype=int), np.zeros(3, dtype=bool)
    for _ in range(40):  # always push left: each episode falls over within about ten steps
        _, _, terminated, truncated, _ = envs.step(np.zeros(3, dtype=np.int64))
        done = terminated | truncated
        running[~resetting] += 1  # next-step autoreset: the step after an end only resets the row
        lengths += [int(n) for n in running[done]]
        running[done] = 0
        resetting = done if autoreset_mode is AutoresetMode.NEXT_STEP else resetting
    running_at_close = sorted(int(n) for n in running if n > 0)
    envs.close()
    assert server.server is not None and server.server.extras.recorder is not None
    assert server.server.extras.recorder.flush()
    with TrajectoryStore(tmp_path / "vec.sqlite") as store:
        episodes = store.episodes(env_id="gym/CartPole-v1")
    ended = [e for e in episodes if e["close_reason"] != "client"]
    cut_short = [e for e in episodes if e["close_reason"] == "client"]
    assert len(lengths) >= 6 and running_at_close
    assert sorted(e["steps"] for e in ended) == sorted(lengths)
    assert all(e["reward"] == e["steps"] and e["terminated"] for e in ended)  # CartPole: 1 per step
    assert sorted(e["steps"] for e in cut_short) == running_at_close
    assert all(e["reward"] == e["steps"] and not (e["terminated"] or e["truncated"]) for e in cut_short)


def test_vector_rows_reset_by_the_client_are_recorded_as_cut_short(
    start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """Resetting rows of a vector mid-episode (reset_mask) reports those episodes, reason "reset"."""
    from palaestra.agents.vector import RemoteVectorEnv

    server = start_server(**_store_config(tmp_path / "cut.sqlite"))
    envs = RemoteVectorEnv(server.address, "gym/CartPole-v1", 3, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=1)
    _, _, terminated, truncated, _ = envs.step(np.ones(3, dtype=np.int64))  # one step: nothing ends yet
    assert not (terminated | truncated).any()
    envs.reset(options={"reset_mask": np.array([True, False, True])})
    assert server.server is not None and server.server.extras.recorder is not None
    assert server.server.extras.recorder.flush()
    with TrajectoryStore(tmp_path / "cut.sqlite") as store:
        episodes = store.episodes(env_id="gym/CartPole-v1")
    assert [(e["steps"], e["close_reason"]) for e in episodes] == [(1, "reset"), (1, "reset")]
    assert {e["episode_id"].split("/")[-2] for e in episodes} == {"0", "2"}  # rows 0 and 2
    envs.close()


def test_palaestra_eval_with_a_store_records_its_run(tmp_path: Path) -> None:
    """`palaestra eval --store` (embedded server) tags every episode with an eval run of its model."""
    from stub_openai import StubOpenAI

    from palaestra.cli import main

    store = tmp_path / "eval.sqlite"
    with StubOpenAI(lambda messages: "The answer is \\boxed{7}.", model="stub-model") as stub:
        code = main(
            [
                "eval",
                "math/arithmetic",
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--episodes",
                "2",
                "--tasks",
                "2",
                "--out",
                str(tmp_path / "eval.jsonl"),
                "--no-progress",
                "--store",
                str(store),
            ]
        )
    assert code == 0
    with TrajectoryStore(store) as opened:
        [run] = opened.runs()
        assert run["kind"] == "eval" and run["model"] == "stub-model" and run["episodes"] == 4
        assert run["tags"] == {"envs": ["math/arithmetic"]}
        episodes = opened.episodes(run_id=run["run_id"], with_trajectory=True)
        assert len(episodes) == 4 and all(e["env_id"] == "math/arithmetic" for e in episodes)
        replies = [a for e in episodes for entry in e["trajectory"] for a in entry["actions"].values()]
        assert replies and all("boxed{7}" in str(reply) for reply in replies)


def test_palaestra_train_with_a_store_records_its_run(tmp_path: Path) -> None:
    """`palaestra train ppo --store` (in-process server) tags every training episode with a train run."""
    store = tmp_path / "train.sqlite"
    train = [
        *[sys.executable, "-m", "palaestra", "train", "ppo", "--env", "gym/CartPole-v1"],
        *["--total-steps", "256", "--num-steps", "64", "--num-envs", "4", "--eval-episodes", "1"],
        *["--out", str(tmp_path / "run"), "--no-tensorboard", "--store", str(store)],
    ]
    done = subprocess.run(train, capture_output=True, timeout=240, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with TrajectoryStore(store) as opened:
        [run] = opened.runs()
        assert run["kind"] == "train-ppo" and run["tags"]["env"] == "gym/CartPole-v1"
        episodes = opened.episodes(run_id=run["run_id"])
        assert run["episodes"] == len(episodes) > 0
        assert all(e["env_id"] == "gym/CartPole-v1" for e in episodes)
    refused = subprocess.run(
        [*train, "--address", "127.0.0.1:1"], capture_output=True, timeout=120, text=True
    )
    assert refused.returncode != 0 and "records to its own [store]" in refused.stderr
