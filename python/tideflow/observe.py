"""Observers: hooks that see every workflow and step transition, for logs and metrics.

Pass one as ``Engine(observer=...)``. With no observer the engine makes no call at all, so the
hooks cost nothing unless used. An observer that raises does not break the run: the error is
logged and the run goes on.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LoggingObserver", "MetricsObserver", "Observer", "notifier"]


def notifier(observer: Any) -> Any:
    """A function ``notify(event, *args)`` calling ``observer.<event>(*args)``, logging (not
    raising) whatever the observer raises. The engine calls it from one place (the extension's
    ``observe.rs``); ``workflow_failed`` arrives with the stored error record, turned here into
    the ``WorkflowFailed`` the hook receives."""

    def notify(event: str, *args: Any) -> None:
        try:
            if event == "workflow_failed":
                from tideflow.run import _error_from

                args = (args[0], args[1], _error_from(args[0], args[2]))
            getattr(observer, event)(*args)
        except Exception:
            logging.getLogger("tideflow").exception("observer %r failed on %s", observer, event)

    return notify


class Observer:
    """Receives workflow and step events; subclass it and override what you need (every hook
    does nothing by default)."""

    def workflow_started(self, instance_id: str, workflow: str) -> None:
        """An instance started (or resumed) running in this process."""

    def workflow_completed(self, instance_id: str, workflow: str, output: Any) -> None:
        """An instance completed with ``output``."""

    def workflow_failed(self, instance_id: str, workflow: str, error: BaseException) -> None:
        """An instance failed (``error`` is its ``WorkflowFailed``)."""

    def workflow_suspended(self, instance_id: str, workflow: str) -> None:
        """An instance suspended: it waits for a signal or a timer."""

    def workflow_cancelled(self, instance_id: str, workflow: str) -> None:
        """An instance was cancelled."""

    def step_started(self, instance_id: str, step: str, attempt: int, position: str) -> None:
        """An attempt of a step is about to run."""

    def step_completed(
        self, instance_id: str, step: str, attempt: int, position: str, duration: float
    ) -> None:
        """An attempt of a step returned (``duration`` in seconds, on the engine's clock)."""

    def step_failed(
        self,
        instance_id: str,
        step: str,
        attempt: int,
        position: str,
        duration: float,
        error: str,
        retrying: bool,
    ) -> None:
        """An attempt of a step raised; ``retrying`` says whether another attempt is scheduled."""


class LoggingObserver(Observer):
    """Writes one structured record per event through the stdlib ``logging`` module (logger
    ``tideflow``): the message is short, the fields are in ``extra`` for JSON formatters."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.log = logger or logging.getLogger("tideflow")
        self.level = level

    def _emit(self, level: int, event: str, **fields: Any) -> None:
        if self.log.isEnabledFor(level):
            text = " ".join(f"{k}={v}" for k, v in fields.items())
            self.log.log(
                level, "%s %s", event, text, extra={"tideflow": {"event": event, **fields}}
            )

    def workflow_started(self, instance_id: str, workflow: str) -> None:
        self._emit(self.level, "workflow.started", instance=instance_id, workflow=workflow)

    def workflow_completed(self, instance_id: str, workflow: str, output: Any) -> None:
        self._emit(self.level, "workflow.completed", instance=instance_id, workflow=workflow)

    def workflow_failed(self, instance_id: str, workflow: str, error: BaseException) -> None:
        self._emit(
            logging.ERROR, "workflow.failed", instance=instance_id, workflow=workflow, error=error
        )

    def workflow_suspended(self, instance_id: str, workflow: str) -> None:
        self._emit(self.level, "workflow.suspended", instance=instance_id, workflow=workflow)

    def workflow_cancelled(self, instance_id: str, workflow: str) -> None:
        self._emit(self.level, "workflow.cancelled", instance=instance_id, workflow=workflow)

    def step_started(self, instance_id: str, step: str, attempt: int, position: str) -> None:
        self._emit(
            logging.DEBUG, "step.started", instance=instance_id, step=step, attempt=attempt,
            position=position,
        )  # fmt: skip

    def step_completed(
        self, instance_id: str, step: str, attempt: int, position: str, duration: float
    ) -> None:
        self._emit(
            self.level, "step.completed", instance=instance_id, step=step, attempt=attempt,
            position=position, duration=round(duration, 6),
        )  # fmt: skip

    def step_failed(
        self,
        instance_id: str,
        step: str,
        attempt: int,
        position: str,
        duration: float,
        error: str,
        retrying: bool,
    ) -> None:
        self._emit(
            logging.WARNING if retrying else logging.ERROR,
            "step.retrying" if retrying else "step.failed",
            instance=instance_id, step=step, attempt=attempt, position=position, error=error,
        )  # fmt: skip


class MetricsObserver(Observer):
    """Counts completions, failures and retries per workflow and step, and sums step time; read
    the figures from its attributes or ``snapshot()``."""

    def __init__(self) -> None:
        self.workflows: dict[tuple[str, str], int] = {}  # (workflow, outcome) -> count
        self.steps: dict[tuple[str, str], int] = {}  # (step, outcome) -> count
        self.step_seconds: dict[str, float] = {}  # step -> total seconds
        self.running: dict[str, str] = {}  # instance -> workflow, started and not finished

    def _count(self, table: dict[tuple[str, str], int], key: tuple[str, str]) -> None:
        table[key] = table.get(key, 0) + 1

    def workflow_started(self, instance_id: str, workflow: str) -> None:
        self.running[instance_id] = workflow
        self._count(self.workflows, (workflow, "started"))

    def _finish(self, instance_id: str, workflow: str, outcome: str) -> None:
        self.running.pop(instance_id, None)
        self._count(self.workflows, (workflow, outcome))

    def workflow_completed(self, instance_id: str, workflow: str, output: Any) -> None:
        self._finish(instance_id, workflow, "completed")

    def workflow_failed(self, instance_id: str, workflow: str, error: BaseException) -> None:
        self._finish(instance_id, workflow, "failed")

    def workflow_suspended(self, instance_id: str, workflow: str) -> None:
        self._finish(instance_id, workflow, "suspended")

    def workflow_cancelled(self, instance_id: str, workflow: str) -> None:
        self._finish(instance_id, workflow, "cancelled")

    def step_completed(
        self, instance_id: str, step: str, attempt: int, position: str, duration: float
    ) -> None:
        self._count(self.steps, (step, "completed"))
        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + duration

    def step_failed(
        self,
        instance_id: str,
        step: str,
        attempt: int,
        position: str,
        duration: float,
        error: str,
        retrying: bool,
    ) -> None:
        self._count(self.steps, (step, "retried" if retrying else "failed"))
        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + duration

    def snapshot(self) -> dict[str, Any]:
        """The figures so far, as plain data."""
        return {
            "workflows": {f"{w}.{o}": n for (w, o), n in sorted(self.workflows.items())},
            "steps": {f"{s}.{o}": n for (s, o), n in sorted(self.steps.items())},
            "step_seconds": dict(sorted(self.step_seconds.items())),
            "running": len(self.running),
        }
