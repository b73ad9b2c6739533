"""Checking actions against an environment's declared action space before the environment sees them."""

from __future__ import annotations

import numpy as np

from palaestra import types as t
from palaestra.server.errors import invalid


def describe_space(space: t.Space) -> str:
    match space:
        case t.DiscreteSpace(n=n, start=start):
            return f"a discrete action in [{start}, {start + n - 1}]"
        case t.BoxSpace(shape=shape, dtype=dtype):
            return f"a tensor of shape {list(shape)} ({dtype})"
        case t.MultiDiscreteSpace(nvec=nvec):
            return f"an integer tensor of shape [{len(nvec)}] with entries below {list(nvec)}"
        case t.MultiBinarySpace(shape=shape):
            return f"a 0/1 tensor of shape {list(shape)}"
        case t.TextSpace(max_length=max_length):
            return "a text action" + (f" of at most {max_length} characters" if max_length else "")
        case _:
            return "a text action or an assistant message (with optional tool calls)"


def check_action(space: t.Space, action: t.Action) -> None:
    """Raise INVALID_ARGUMENT, saying what was expected, unless `action` lies in `space`.
    (The description is built only on failure: this runs on every step.)"""
    kind = action.kind
    if kind == "empty":
        raise invalid(f"the action is empty; expected {describe_space(space)}")
    match space:
        case t.DiscreteSpace(n=n, start=start):
            if kind != "discrete" or not start <= int(action.discrete or 0) < start + n:
                raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
        case t.BoxSpace() | t.MultiDiscreteSpace() | t.MultiBinarySpace():
            _check_tensor(space, action)
        case t.TextSpace(max_length=max_length):
            if kind != "text":
                raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
            if max_length and len(action.text or "") > max_length:
                length = len(action.text or "")
                raise invalid(f"the text action has {length} characters; expected {describe_space(space)}")
        case t.ChatSpace():
            if kind not in ("text", "message"):
                raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
            if action.message is not None and action.message.role not in ("assistant", ""):
                raise invalid(f"an action message must have role 'assistant', got {action.message.role!r}")


def _check_tensor(space: t.Space, action: t.Action) -> None:
    if action.tensor is None:
        raise invalid(f"got {_show(action)}; expected {describe_space(space)}")
    tensor = action.tensor
    if isinstance(space, t.BoxSpace):
        shape = tuple(space.shape)
    elif isinstance(space, t.MultiDiscreteSpace):
        shape = (len(space.nvec),)
    else:
        shape = tuple(space.shape)  # type: ignore[union-attr]
    if tuple(tensor.shape) != shape:
        raise invalid(f"got a tensor of shape {list(tensor.shape)}; expected {describe_space(space)}")
    if isinstance(space, t.BoxSpace) and not np.all(np.isfinite(tensor)):
        raise invalid(f"the tensor holds NaN or infinite values; expected {describe_space(space)}")
    if isinstance(space, t.MultiDiscreteSpace) and (
        np.any(tensor < 0) or np.any(tensor >= np.asarray(space.nvec))
    ):
        raise invalid(f"tensor entries out of range; expected {describe_space(space)}")
    if isinstance(space, t.MultiBinarySpace) and not np.all((tensor == 0) | (tensor == 1)):
        raise invalid(f"tensor entries must be 0 or 1; expected {describe_space(space)}")


def _show(action: t.Action) -> str:
    if action.kind == "discrete":
        return f"the discrete action {action.discrete}"
    if action.kind == "tensor" and action.tensor is not None:
        return f"a tensor of shape {list(action.tensor.shape)}"
    return f"a {action.kind} action"
