"""Palaestra: a plugin-based environment server for agentic reinforcement learning."""

import os

# The server starts sandbox and verifier processes while gRPC threads run; gRPC's fork handlers are of no
# use there and log a line per process. Must be set before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from palaestra.env import AsyncEnv, Env, EnvContext, InfraError, InvalidAction
from palaestra.hookspecs import hookimpl
from palaestra.types import (
    Action,
    AgentResult,
    BoxSpace,
    ChatSpace,
    ChecklistItemResult,
    ComponentStatus,
    DiscreteSpace,
    EnvKind,
    EnvSpec,
    Evidence,
    InfraFailure,
    Message,
    MultiBinarySpace,
    MultiDiscreteSpace,
    Observation,
    RewardComponent,
    RewardComponentSpec,
    RewardKind,
    StepResult,
    TextSpace,
    ToolCall,
)

__version__ = "0.1.0"
PROTOCOL_VERSION = "palaestra.v1"

__all__ = [
    "PROTOCOL_VERSION",
    "Action",
    "AgentResult",
    "AsyncEnv",
    "BoxSpace",
    "ChatSpace",
    "ChecklistItemResult",
    "ComponentStatus",
    "DiscreteSpace",
    "Env",
    "EnvContext",
    "EnvKind",
    "EnvSpec",
    "Evidence",
    "InfraError",
    "InfraFailure",
    "InvalidAction",
    "Message",
    "MultiBinarySpace",
    "MultiDiscreteSpace",
    "Observation",
    "RewardComponent",
    "RewardComponentSpec",
    "RewardKind",
    "StepResult",
    "TextSpace",
    "ToolCall",
    "__version__",
    "hookimpl",
]
