"""Tasks by name: what a head is trained for and how its answer is read (see ``geep.tasks.base``).

``get_task(name)`` looks a task's class up; ``TASKS`` lists them; a new task registers with :func:`register_task`
(one file per task, as policies and objectives are). A model's config names its task and binds it
(``GeepConfig.make_task``). Tasks import only ``geep.errors``, torch and the metric libraries.
"""

from __future__ import annotations

from geep.errors import GeepError
from geep.tasks.base import Answers, OutputLayout, Task
from geep.tasks.classification import Classification
from geep.tasks.multi_label import MultiLabel
from geep.tasks.regression import Regression
from geep.tasks.token_classification import TokenClassification

TASKS: dict[str, type[Task]] = {}


def register_task(task: type[Task]) -> type[Task]:
    """Adds a task class to the registry under ``task.name``."""
    TASKS[task.name] = task
    return task


for _task in (Classification, Regression, MultiLabel, TokenClassification):
    register_task(_task)


def get_task(name: str) -> type[Task]:
    """The registered task class called ``name``; GeepError listing the known ones."""
    if name not in TASKS:
        raise GeepError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Answers", "Classification", "MultiLabel", "OutputLayout", "Regression", "Task", "TokenClassification",
           "get_task", "register_task"]
