"""The reasoning-gym plugin through a real server: every dataset played from its own answers (a correct
answer earns full marks, a wrong one does not, a reply without `<answer>` is a format failure), options
checked against the config dataclass, and the compliance suite over every dataset."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from palaestra.agents.client import Client, PalaestraError
from palaestra.plugins.reasoning_gym import PREFIX, build_item, dataset_config, dataset_names
from palaestra.server.app import ServerThread
from palaestra.server.config import ServerConfig
from palaestra.testing import ComplianceSuite
from palaestra.types import Action, RewardKind

SEEDS = (0, 1)
# A meta-dataset: it mixes other datasets and has nothing to serve until they are named.
COMPOSITE = {"datasets": [{"name": "leg_counting", "weight": 1.0, "config": {}}]}
NEEDS_OPTIONS = {"composite": COMPOSITE}
EVERY = [PREFIX + name for name in dataset_names()]


@pytest.fixture(scope="module")
def rg_client() -> Iterator[Client]:
    config = ServerConfig(port=0, disabled_plugins=["code", "math", "tools", "sandboxes", "games"])
    with ServerThread(config) as server, Client(server.address) as client:
        yield client


def _play(client: Client, name: str, seed: int, reply: str) -> dict[str, float]:
    [first] = client.open(PREFIX + name, seed=seed, options=NEEDS_OPTIONS.get(name, {}))
    step = client.step(first.episode_id, Action(text=reply))
    assert step.done and step.infra_failure is None
    client.close(first.episode_id)
    return {c.name: c.value for c in step.result.components}


def _wrong_answer(name: str, seed: int) -> str:
    """An answer the item's own scorer does not accept: another item's answer, else nonsense."""
    config = dataset_config(name, NEEDS_OPTIONS.get(name, {}))
    dataset, item = build_item(name, config, seed)
    candidates = [str(build_item(name, config, other)[1]["answer"]) for other in range(100, 104)]
    for candidate in [*candidates, "no such answer", "0", ""]:
        try:
            if candidate != str(item["answer"]) and dataset.score_answer(candidate, item) < 1.0:
                return candidate
        except Exception:
            return candidate
    raise AssertionError(f"{name}: no wrong answer found")


@pytest.mark.timeout(900)
def test_every_dataset_scores_its_own_answers(rg_client: Client) -> None:
    without_answers = []
    for name in dataset_names():
        config = dataset_config(name, NEEDS_OPTIONS.get(name, {}))
        for seed in SEEDS:
            _, item = build_item(name, config, seed)
            if item["answer"] is None:  # the dataset verifies answers without giving one
                without_answers.append(name)
            else:
                right = _play(rg_client, name, seed, f"Thinking... <answer>{item['answer']}</answer>")
                assert right == {"correct": 1.0, "format": 0.0}, (name, seed, item["answer"])
            wrong = _play(rg_client, name, seed, f"<answer>{_wrong_answer(name, seed)}</answer>")
            assert wrong["correct"] < 1.0 and wrong["format"] == 0.0, (name, seed)
        bare = _play(rg_client, name, SEEDS[0], str(item["answer"]))  # the answer, without the tags
        assert bare == {"correct": 0.0, "format": -1.0}, name
    assert len(set(without_answers)) < 10, without_answers  # reasoning-gym gives answers for most


def test_a_seed_is_one_item_and_seeds_differ(rg_client: Client) -> None:
    def question(seed: int) -> str:
        [first] = rg_client.open("rg/leg_counting", seed=seed)
        rg_client.close(first.episode_id)
        return first.result.observation.messages[-1].content

    assert question(5) == question(5)
    assert len({question(seed) for seed in range(5)}) > 1


def test_options_configure_the_dataset(rg_client: Client) -> None:
    options = {"min_animals": 1, "max_animals": 1, "min_instances": 1, "max_instances": 1}
    [first] = rg_client.open("rg/leg_counting", seed=3, options=options)
    question = first.result.observation.messages[-1].content
    animals = question.split("if you have ")[1]
    assert animals.startswith("1 ") and "," not in animals  # one kind of animal, once
    spec = rg_client.describe("rg/leg_counting")
    assert spec.options_schema is not None
    assert spec.options_schema["properties"]["min_animals"]["type"] == "integer"
    assert "seed" not in spec.options_schema["properties"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"min_animals": "three"}, "not of type 'integer'"),
        ({"min_animals": 5, "max_animals": 2}, "max_animals must be >= min_animals"),
        ({"legs": 4}, "'legs' was unexpected"),
    ],
)
def test_refused_options_are_invalid_argument(
    rg_client: Client, options: dict[str, object], says: str
) -> None:
    with pytest.raises(PalaestraError) as caught:
        rg_client.open("rg/leg_counting", options=options)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert says in caught.value.message


def test_unknown_dataset_is_not_found_and_composite_wants_its_datasets(rg_client: Client) -> None:
    with pytest.raises(PalaestraError) as caught:
        rg_client.open("rg/no_such_dataset")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    with pytest.raises(PalaestraError) as caught:
        rg_client.open("rg/composite")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "Must specify at least one dataset" in caught.value.message


def test_rewards_are_declared_with_the_format_convention(rg_client: Client) -> None:
    spec = rg_client.describe("rg/leg_counting")
    declared = {c.name: (c.kind, c.low, c.high) for c in spec.reward_components}
    assert declared == {"correct": (RewardKind.OUTCOME, 0.0, 1.0), "format": (RewardKind.FORMAT, -1.0, 0.0)}


class TestEveryDatasetComplies(ComplianceSuite):
    """The shipped compliance suite over every dataset but composite (its open needs options)."""

    env_ids = [env_id for env_id in EVERY if env_id != "rg/composite"]
    server_config = {"disabled_plugins": ["code", "math", "tools", "sandboxes", "games"]}
