"""Recording a training run: `metrics.jsonl` (one JSON object per step), TensorBoard scalars, and a plot
of reward and each reward component over steps."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class MetricsLog:
    """metrics.jsonl plus (optionally) TensorBoard scalars."""

    def __init__(self, out: Path, tensorboard: bool = True) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        self.file = self.path.open("a")
        self.writer: Any = None
        if tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metrics(rows: Sequence[Mapping[str, float]], png: Path, title: str) -> Path:
    """One panel for rewards (train and evaluation), one for each reward component's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        return [p[0] for p in points], [p[1] for p in points]

    keys = sorted({k for r in rows for k in r})
    rewards = [k for k in keys if k.endswith("reward") or k.startswith("return")]
    components = [k for k in keys if "/component/" in k]
    panels = 2 if components else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    for key in rewards:
        axes[0][0].plot(*series(key), label=key, marker="." if key.startswith("eval") else None)
    axes[0][0].set(title=title, xlabel="step", ylabel="reward")
    axes[0][0].legend(fontsize=8)
    if components:
        for key in components:
            axes[0][1].plot(*series(key), label=key)
        axes[0][1].set(title="reward components (mean per episode)", xlabel="step")
        axes[0][1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
