"""The verifiers taskset id `palaestra-verifiers`: verifiers imports a taskset by a top-level module
name, so this package re-exports `palaestra.agents.verifiers_adapter` (see there)."""

from palaestra.agents.verifiers_adapter import PalaestraEnv, PalaestraHarness, PalaestraTaskset

__all__ = ["PalaestraEnv", "PalaestraHarness", "PalaestraTaskset"]
