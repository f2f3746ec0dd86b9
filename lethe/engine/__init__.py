"""The one training engine: pre-training, unlearning, poisoning and fine-tuning differ only in objective."""

from lethe.engine.objectives import Objective, objectives, token_cross_entropy
from lethe.engine.processes import from_main_process, is_main_process, process_state
from lethe.engine.trainer import Callback, EarlyStopping, Trainer, TrainResult

__all__ = ["Callback", "EarlyStopping", "Objective", "TrainResult", "Trainer", "from_main_process", "is_main_process",
           "objectives", "process_state", "token_cross_entropy"]
