"""The trajectory store: every finished episode, in an embedded SQLite database.

The server records through the `palaestra_episode_finished` hook (`StoreRecorder`, batched writes in a
background thread); trainers and evaluators tag their episodes with a run (`RunRecorder`);
`palaestra.store.export` turns episodes into Parquet files and Hugging Face datasets (SFT records,
preference pairs). See docs/dashboard.md.
"""

from palaestra.store.db import StoreSettings, TrajectoryStore
from palaestra.store.recorder import StoreRecorder
from palaestra.store.runs import RunRecorder

__all__ = ["RunRecorder", "StoreRecorder", "StoreSettings", "TrajectoryStore"]
