"""Tasks: offline data sets and generators with their stems, heads, losses and metrics.

Named on the CLI as ``mnist1d``, ``digits``, ``mqar``, ``icl-regression``, ``sort``, ``convex-hull``,
``darcy``, ``algorithmic``;
the user's own data becomes a task through ``archgram.tasks.data`` and a task
class of the user's through a reference (``archgram.tasks.reference``).
Every module here is imported below, so a task module registers itself
(``@register_task``) without a line in this file.
"""
from archgram.registry import import_submodules
from archgram.tasks.base import TASKS, Recipe, Task, TaskData, all_tasks, get_task, register_task, task_names

import_submodules(__name__)

__all__ = ["TASKS", "Recipe", "Task", "TaskData", "all_tasks", "get_task", "register_task", "task_names"]
