"""Checks of `VLLMBackend` against transformers, run by tests/test_vllm.py in the vLLM environment.

`python tests/vllm_checks.py WORKDIR` builds the tiny model in code, saves it, starts a `VLLMBackend` on
it and prints one JSON object with what it measured:

* greedy generation parity: vLLM's ids against transformers' own greedy generation, per prompt;
* log-prob agreement: the log-prob vLLM reports for each token it sampled (temperature 1) against the
  trainer's forward pass (`grpo.token_logprobs`) over the same ids, i.e. the first-epoch importance ratio;
* weight sync: new weights loaded into the trainer's model, `backend.load_weights(model)`, then vLLM's
  greedy ids again against transformers with the new weights (and against the old outputs);
* the platform: whether sleep mode exists, and that sleep/wake leave the engine working.

It asserts nothing itself: the test reads the JSON and asserts, so a failure names the figure.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path


def main(workdir: Path) -> dict[str, object]:
    import torch

    from palaestra.agents.generation import SamplingSettings, TransformersBackend, VLLMBackend
    from palaestra.agents.grpo import token_logprobs
    from palaestra.agents.tiny import build_model, build_tokenizer
    from palaestra.agents.tokens import ChatCodec
    from palaestra.types import Message

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=128, seed=0).eval()
    model_dir = workdir / "tiny"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    codec = ChatCodec(tokenizer)
    prompts = [
        codec.prompt_ids([Message("user", text)])
        for text in ("Compute 3 + 4.", "Hello there", "What is the capital of France?", "x", "1 2 3 4 5 6 7")
    ]
    report: dict[str, object] = {}

    started = time.perf_counter()
    backend = VLLMBackend(str(model_dir), seed=0, max_model_len=512)
    report["engine_start_s"] = time.perf_counter() - started
    report["sleep_mode"] = backend.sleep_mode
    transformers_backend = TransformersBackend(model, tokenizer.pad_token_id)
    greedy = SamplingSettings(max_new_tokens=24, temperature=0.0, stop_ids=tuple(codec.stop_ids))

    def greedy_both() -> tuple[list[list[int]], list[list[int]]]:
        ours = [s.ids for s in backend.generate(prompts, greedy)]
        reference = [s.ids for s in transformers_backend.generate(prompts, greedy)]
        return ours, reference

    started = time.perf_counter()
    vllm_ids, hf_ids = greedy_both()
    report["first_generate_s"] = time.perf_counter() - started
    report["greedy_equal"] = [a == b for a, b in zip(vllm_ids, hf_ids, strict=True)]
    report["greedy_lengths"] = [len(ids) for ids in vllm_ids]

    def logprob_gaps(reference: object) -> dict[str, float]:
        sampling = SamplingSettings(max_new_tokens=32, temperature=1.0, stop_ids=tuple(codec.stop_ids))
        samples = backend.generate([p for p in prompts for _ in range(4)], sampling)
        gaps: list[float] = []
        for prompt, sample in zip([p for p in prompts for _ in range(4)], samples, strict=True):
            ids = torch.tensor([list(prompt) + sample.ids])
            with torch.no_grad():
                trainer = token_logprobs(reference, ids, torch.ones_like(ids))[0, len(prompt) - 1 :]
            gaps += [abs(float(t) - v) for t, v in zip(trainer.tolist(), sample.logprobs, strict=True)]
        ratios = [math.exp(g) for g in gaps]
        return {"tokens": len(gaps), "max_abs_logprob_gap": max(gaps), "max_ratio_minus_1": max(ratios) - 1}

    report["logprobs_before_sync"] = logprob_gaps(model)

    # New weights: another random initialisation (wider, so that greedy outputs change), copied into the
    # trainer's model object.
    old_model = copy.deepcopy(model)
    other = build_model(tokenizer, hidden_size=128, seed=1, initializer_range=0.2)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(other.state_dict()[name])
    started = time.perf_counter()
    backend.sleep()
    backend.wake()
    backend.load_weights(model)
    report["sync_s"] = time.perf_counter() - started
    new_vllm_ids, new_hf_ids = greedy_both()
    report["after_sync_equal"] = [a == b for a, b in zip(new_vllm_ids, new_hf_ids, strict=True)]
    report["after_sync_changed"] = [a != b for a, b in zip(new_vllm_ids, vllm_ids, strict=True)]
    report["logprobs_after_sync"] = logprob_gaps(model)
    report["old_weights_logprob_gap"] = logprob_gaps(old_model)["max_abs_logprob_gap"]

    started = time.perf_counter()
    count = 64
    timing_prompts = [prompts[i % len(prompts)] for i in range(count)]
    samples = backend.generate(timing_prompts, SamplingSettings(max_new_tokens=32, temperature=1.0))
    seconds = time.perf_counter() - started
    report["tokens_per_s"] = sum(len(s.ids) for s in samples) / seconds
    return report


if __name__ == "__main__":
    workdir = Path(sys.argv[1])
    workdir.mkdir(parents=True, exist_ok=True)
    print("VLLM_CHECKS " + json.dumps(main(workdir)), flush=True)
