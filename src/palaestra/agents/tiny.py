"""A tiny causal language model and a character-level chat tokenizer, both built in code.

Tests and CPU demos need a policy that downloads nothing. The tokenizer maps every printable ASCII
character to one token, has role tokens and an end-of-turn token, and carries a Jinja chat template that
renders tool schemas and tool calls, so the rollout engine exercises the same code path as for a real
model. Because every character is its own token, tokenizing two strings separately gives the same ids as
tokenizing their concatenation; the token-exact machinery does not rely on that, but it keeps the tiny
model's world simple.
"""

from __future__ import annotations

import string
from typing import Any

from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

END_OF_TURN = "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", END_OF_TURN, "<|unk|>", *ROLE_TOKENS)
TOOL_CALL_TOKENS = ("<tool_call>", "</tool_call>")

# Each message is <|role|>content<|end|>; assistant tool calls follow the content as
# <tool_call>{"name": ..., "arguments": ...}</tool_call>. Tools are listed by name in a system block.
CHAT_TEMPLATE = (
    "{%- if tools -%}<|system|>tools:"
    "{%- for tool in tools %} {{ (tool.function if tool.function is defined else tool).name }}{% endfor -%}"
    "<|end|>{%- endif -%}"
    "{%- for message in messages -%}"
    "<|{{ message.role }}|>{{ message.content or '' }}"
    "{%- for call in (message.tool_calls or []) -%}"
    '<tool_call>{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments }}}</tool_call>'
    "{%- endfor -%}"
    "<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with chat roles, an end-of-turn token and a chat template."""
    vocab: dict[str, int] = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(set(string.printable)):
        vocab.setdefault(char, len(vocab))
    # BPE with no merges is a character-level model; unknown characters map to <|unk|>.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|unk|>"))
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.add_tokens(list(TOOL_CALL_TOKENS))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|bos|>",
        eos_token=END_OF_TURN,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
    **overrides: Any,
) -> LlamaForCausalLM:
    """A randomly initialised Llama-style model sized for CPU tests (about 100k parameters by default)."""
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **overrides,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
