"""What `palaestra run games/...` needs for a visible match: a text rendering of any game observation
and a scripted policy that plays legal moves.

    render_text(observation: Observation) -> str
    scripted_policy(env_id: str, seed: int | None = None) -> Callable[[str, AgentResult], Action]

The policy takes (seat, that seat's latest AgentResult) and returns the seat's next action.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from palaestra.types import Action, AgentResult, EpisodeStep, Observation


def render_text(observation: Observation) -> str:
    """The board as text: the chat messages of a text game, or a drawing of a tensor board."""
    if observation.messages:
        return "\n\n".join(f"[{m.role}] {m.content}" for m in observation.messages)
    tensor = observation.tensor
    if tensor is None:
        return ""
    if tensor.ndim == 3 and tensor.shape[2] == 2:  # tic-tac-toe / connect four planes: me, opponent
        return _draw_planes(tensor)
    head = np.array2string(tensor.reshape(-1)[:32], threshold=32)
    return f"tensor {list(tensor.shape)} {tensor.dtype}: {head}"


def _draw_planes(tensor: np.ndarray) -> str:
    if tensor.shape[:2] == (3, 3):  # PettingZoo stores tic-tac-toe column by column
        tensor = tensor.transpose(1, 0, 2)
    rows = []
    for row in tensor:
        rows.append(" ".join("x" if cell[0] else "o" if cell[1] else "." for cell in row))
    return "\n".join(rows) + "\n(x: the seat to move, o: its opponent)"


def scripted_policy(env_id: str, seed: int | None = None) -> Callable[[str, AgentResult], Action]:
    """A policy that plays a random legal move (tensor and text forms) or haggles (barter)."""
    rng = random.Random(seed)

    def policy(seat: str, result: AgentResult) -> Action:
        observation = result.observation
        if env_id.startswith("games/barter"):
            return Action(text=_barter_line(observation, rng))
        if observation.legal_actions:
            return Action(text=f"move: {rng.choice(observation.legal_actions)}")
        if observation.action_mask is not None and observation.action_mask.any():
            return Action(discrete=int(rng.choice(np.flatnonzero(observation.action_mask).tolist())))
        return Action(discrete=0)

    return policy


def _barter_line(observation: Observation, rng: random.Random) -> str:
    text = "\n".join(m.content for m in observation.messages)
    if "Standing proposal" in text and rng.random() < 0.5:
        return "ACCEPT"
    counts = observation.info.get("counts", {})
    keep = " ".join(f"{good}={rng.randint(0, int(n))}" for good, n in counts.items())
    return f"What do you value most? PROPOSE: {keep}" if keep else "Hello."


def make_scripted_policy(env_id: str, seed: int | None = None) -> Callable[[EpisodeStep], dict[str, Action]]:
    """The form `palaestra run` asks for: self-play, every acting seat moved by `scripted_policy`."""
    policy = scripted_policy(env_id, seed)

    def act(step: EpisodeStep) -> dict[str, Action]:
        seats = [step.next_agent] if step.next_agent else list(step.agents)
        return {seat: policy(seat, step.agents.get(seat, AgentResult())) for seat in seats}

    return act
