"""Palaestra: a plugin-based environment server for agentic reinforcement learning."""

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
