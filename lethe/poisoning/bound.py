"""The utility bound of Forget to Flourish: released weights keep the reference loss L(D*) within ε."""

from __future__ import annotations

import logging

from lethe.engine import Callback

log = logging.getLogger("lethe")


class UtilityBound(Callback):
    """Releases only weights within the bound, checked after every step. On crossing, `stop` restores the last
    in-bound weights and stops; `project` has the objective descend on D* until the bound holds again, then
    resume the ascent, and restores and stops if that takes more than `max_projection_steps`; `penalty`
    trains on (its objective holds the D* term) and the last in-bound weights are restored at the end."""

    def __init__(self, model, limit: float, objective, on_cross: str = "stop", max_projection_steps: int = 10) -> None:
        self.model, self.limit, self.objective = model, limit, objective
        self.on_cross, self.max_projection_steps = on_cross, max_projection_steps
        self.crossed_at: int | None = None
        self.crossings, self.projecting_for, self.projection_failed, self.stopped = 0, 0, False, False
        self.steps = {"ascent": 0, "projection": 0, "undone": 0}
        self._since_snapshot = 0
        self._remember()

    @property
    def projecting(self) -> bool:
        return getattr(self.objective, "projecting", False)

    def _remember(self) -> None:
        self.snapshot = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        self._since_snapshot = 0

    def restore(self) -> None:
        """Back to the last in-bound weights (no-op if the current ones are)."""
        if self._since_snapshot:
            self.model.load_state_dict(self.snapshot)
            self.steps["undone"] += self._since_snapshot
            self._since_snapshot = 0

    def on_evaluate(self, step, metrics):
        self.steps["projection" if self.projecting else "ascent"] += 1
        self._since_snapshot += 1
        if metrics["reference_loss"] <= self.limit:
            self._remember()
            self._set_projecting(False)
            return False
        if not self.projecting:
            self.crossings += 1
            self.crossed_at = self.crossed_at or step
            self.projecting_for = 0
        if self.on_cross == "penalty":
            return False
        if self.on_cross == "project" and self.projecting_for < self.max_projection_steps:
            self._set_projecting(True)
            self.projecting_for += 1
            return False
        self.projection_failed, self.stopped = self.on_cross == "project", True
        self.restore()
        log.info("step %d: reference loss %.4f > bound %.4f%s: last in-bound weights restored, poisoning stops",
                 step, metrics["reference_loss"], self.limit,
                 f" after {self.max_projection_steps} projection steps" if self.projection_failed else "")
        return True

    def _set_projecting(self, value: bool) -> None:
        if hasattr(self.objective, "projecting"):
            self.objective.projecting = value

    def summary(self) -> dict:
        return {"crossed_at_step": self.crossed_at, "crossings": self.crossings,
                "projection_failed": self.projection_failed}
