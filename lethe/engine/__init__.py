"""The one training engine: pre-training, unlearning, poisoning and fine-tuning differ only in objective."""

from lethe.engine.objectives import Objective, objectives, token_cross_entropy
from lethe.engine.trainer import Callback, EarlyStopping, Trainer, TrainResult
from lethe.processes import process_state

__all__ = ["Callback", "EarlyStopping", "Objective", "TrainResult", "Trainer", "objectives", "process_state",
           "token_cross_entropy"]
