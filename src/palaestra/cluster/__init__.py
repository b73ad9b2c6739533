"""Scale-out on Ray: one Palaestra server replica per node, a named directory actor, and their control.

`palaestra.cluster.api.RayCluster` (Python) and `palaestra cluster up|status|drain|remove|down` (CLI)
start and manage them; `Client("directory:palaestra-directory")` (or `Client("h1:p1,h2:p2")`) is the one
client view over the replicas (`palaestra.agents.multi`).
Ray is imported only when a cluster is used (the `ray` extra)."""

from __future__ import annotations

__all__ = ["DIRECTORY_NAME", "NAMESPACE"]

NAMESPACE = "palaestra"  # the Ray namespace of the directory and the replicas
DIRECTORY_NAME = "palaestra-directory"  # the named directory actor
