"""The settings of the run stages that the command line reads, importable without NumPy or
pyarrow: the tasks' names and archive scoring."""

from __future__ import annotations

from dataclasses import dataclass

from ctfp.device import check_device_name
from ctfp.settings import Settings, option

#: The two tasks of the challenge: membership (task 1) and attribution (task 2).
TASKS = ("task1", "task2")


@dataclass(frozen=True)
class ScoreSettings(Settings):
    """Archive scoring through a saved model (``ctfp score``)."""

    stage = "score"

    batch_size: int = option(16_384, "rows per batch (memory)", minimum=1)
    device: str = option(
        "auto", "auto|cpu|cuda or cuda:N for the model's indexes", check=check_device_name
    )


__all__ = ["TASKS", "ScoreSettings"]
