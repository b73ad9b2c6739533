"""Testing helpers shipped with Palaestra, for plugin authors.

`palaestra.testing.compliance` holds the compliance checks (plain functions over a connected client);
`ComplianceSuite` (needs pytest) runs them as tests against a real server. See docs/writing-a-plugin.md.
"""

from __future__ import annotations

from typing import Any

from palaestra.testing.compliance import (
    SERVER_CHECKS,
    ComplianceError,
    check_close_idempotent,
    check_ends_by_itself,
    check_malformed_actions,
    check_open_and_close,
    check_rewards_declared,
    check_seeds_reproduce,
    run_checks,
)

__all__ = [
    "SERVER_CHECKS",
    "ComplianceError",
    "ComplianceSuite",
    "check_close_idempotent",
    "check_ends_by_itself",
    "check_malformed_actions",
    "check_open_and_close",
    "check_rewards_declared",
    "check_seeds_reproduce",
    "run_checks",
]


def __getattr__(name: str) -> Any:
    if name == "ComplianceSuite":  # imports pytest: only when asked for
        from palaestra.testing.suite import ComplianceSuite

        return ComplianceSuite
    raise AttributeError(f"module 'palaestra.testing' has no attribute {name!r}")
