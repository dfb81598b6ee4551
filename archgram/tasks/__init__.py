"""Tasks: offline data sets and generators with their stems, heads, losses and metrics.

Named on the CLI as ``mnist1d``, ``digits``, ``mqar``, ``icl-regression``, ``sort``, ``convex-hull``,
``darcy``, ``algorithmic``;
the user's own data becomes a task through ``archgram.tasks.data`` and a task
class of the user's through a reference (``archgram.tasks.reference``).
"""
from archgram.tasks import algorithmic, classification, convex_hull, darcy, icl_regression, mqar, sort  # noqa: F401  (register)
from archgram.tasks.base import Recipe, Task, TaskData, all_tasks, get_task, register_task, task_names

__all__ = ["Recipe", "Task", "TaskData", "all_tasks", "get_task", "register_task", "task_names"]
