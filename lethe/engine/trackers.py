"""`train.log_with`: the records the engine logs (losses, learning rate, gradient norm, evaluations) also sent to
Accelerate's trackers (TensorBoard, Weights & Biases, MLflow, ...), each an optional package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from lethe.errors import LetheError

if TYPE_CHECKING:
    from lethe.config import TrainConfig

# the package each tracker needs, and the extra of lethe-llm that installs it where there is one
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
            "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
EXTRAS = ("tensorboard", "wandb", "mlflow")
PROJECT = "lethe"


def refuse_missing_packages(names: list[str]) -> None:
    """Checked with the config, before a run starts: a tracker's package is an optional one."""
    if missing := [name for name in names if importlib.util.find_spec(PACKAGES[name]) is None]:
        install = (f"pip install 'lethe-llm[{missing[0]}]'" if missing[0] in EXTRAS
                   else f"pip install {PACKAGES[missing[0]]}")
        raise LetheError(f"train.log_with names {missing[0]}, whose package is not installed: {install}")


def accelerator_options(config: TrainConfig) -> dict:
    """Accelerator(**these): the trackers, and for those that write files (TensorBoard) the open run's trackers/."""
    if not config.log_with:
        return {}
    refuse_missing_packages(config.log_with)
    from lethe.runs import open_run

    run = open_run()
    return {"log_with": list(config.log_with), "project_dir": str((run.path if run else Path.cwd()) / "trackers")}


def _flat(values: dict, prefix: str = "") -> dict:
    """Hyperparameters as trackers take them: one level, scalars and strings."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}/")
        elif value is not None:
            flat[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str) else str(value)
    return flat


class Tracking:
    """Started with the training loop, fed every record the engine keeps in its history, finished with it."""

    def __init__(self, accelerator, config: TrainConfig, desc: str) -> None:
        self.accelerator, self.active = accelerator, bool(config.log_with)
        if self.active:
            from lethe.runs import open_run

            run = open_run()
            name = run.path.name if run else desc
            accelerator.init_trackers(PROJECT, config=_flat(config.model_dump(mode="json")),
                                      init_kwargs={"wandb": {"name": name}, "mlflow": {"run_name": name}})

    def log(self, record: dict) -> None:
        if self.active:
            self.accelerator.log({key: value for key, value in record.items() if key != "step"}, step=record["step"])

    def finish(self) -> None:
        # each tracker itself, not Accelerator.end_training, which would also end a distributed run's process group
        for tracker in self.accelerator.trackers if self.active else ():
            tracker.finish()
