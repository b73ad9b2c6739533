"""Run `PalaestraAgentLoop` inside verl's own agent-loop machinery with a scripted rollout server.

Started by tests/test_adapter_verl.py with the verl venv's Python: `python verl_loop_check.py ADDRESS`.
Prints one JSON line per episode: what verl would train on (ids, mask, reward) plus decoded text.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from fractions import Fraction
from typing import Any

from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.workers.rollout.replica import TokenOutput

from palaestra.agents.text_episode import close_shared_clients
from palaestra.agents.tiny import END_OF_TURN, build_tokenizer
from palaestra.agents.verl_adapter import PalaestraAgentLoop


class ScriptedServer:
    """Stands in for verl's LLMServerClient: answers each prompt from its decoded text."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls = 0

    async def generate(
        self, *, request_id: str, prompt_ids: list[int], sampling_params: Any, **_: Any
    ) -> Any:
        self.calls += 1
        prompt = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        if "find_customer" in prompt and "<|tool|>" not in prompt:
            email = re.search(r"[a-z.]+@example\.com", prompt).group(0)  # type: ignore[union-attr]
            call = {"name": "find_customer", "arguments": {"email": email}}
            text = f"<tool_call>{json.dumps(call)}</tool_call>"
        elif "find_customer" in prompt:
            text = "You are verified."
        else:
            expression = re.findall(r"value of (.*?)\.<", prompt)[-1]
            value = Fraction(eval(re.sub(r"(\d+)", r"Fraction(\1)", expression), {"Fraction": Fraction}))
            text = f"\\boxed{{{value}}}"
        ids = self.tokenizer.encode(text + END_OF_TURN, add_special_tokens=False)
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids), stop_reason="completed")


async def main(address: str) -> None:
    tokenizer = build_tokenizer()
    config = OmegaConf.create(
        {"actor_rollout_ref": {"rollout": {"prompt_length": 8192, "response_length": 4096}}}
    )
    server = ScriptedServer(tokenizer)
    loop = PalaestraAgentLoop(
        trainer_config=DictConfigWrap(config),
        server_manager=server,
        tokenizer=tokenizer,
        processor=None,
        dataset_cls=None,
        data_config=DictConfigWrap(OmegaConf.create({})),
    )
    loop.max_turns = 2
    for env_id, seed in (("math/arithmetic", 1), ("tools/shop", 1)):
        extra_info = {"env_id": env_id, "seed": seed, "address": address}
        output = await loop.run({"temperature": 1.0}, extra_info=extra_info)
        policy = [t for t, m in zip(output.response_ids, output.response_mask, strict=True) if m == 1]
        print(
            json.dumps(
                {
                    "env_id": env_id,
                    "reward": output.reward_score,
                    "num_turns": output.num_turns,
                    "prompt": tokenizer.decode(output.prompt_ids, skip_special_tokens=False),
                    "response": tokenizer.decode(output.response_ids, skip_special_tokens=False),
                    "policy_text": tokenizer.decode(policy, skip_special_tokens=False),
                    "mask_ones": sum(output.response_mask),
                    "mask_len": len(output.response_mask),
                    "response_len": len(output.response_ids),
                    "logprobs": output.response_logprobs,
                    "components": output.extra_fields["palaestra_components"],
                }
            ),
            flush=True,
        )
    close_shared_clients()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
