"""A task is described once, by its config file ``configs/task/<name>.yaml``: ``task._target_`` names its class,
the other keys of ``task`` are that class's arguments, and ``task.report`` says how the report shows its runs
(tasks/report/sections.py). ``build_task`` turns a run's resolved config into the task object, the same way for
every entry point that needs one: training (tasks/train.py), staging data (tasks/stage.py), re-evaluating
(tasks/evaluate.py) and scoring alignments (tasks/seq2seq/align.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import hydra

# keys of the task's config block that are the report's, not the task class's
NOT_TASK_ARGUMENTS = ("report",)


def build_task(config: Mapping):
    """The task of a resolved config (plain containers: ``task``, ``attention``, ``seed``, ``data_dir``). Its class
    gets the attention's config node, the seed and the download cache besides its own block."""
    spec = {key: value for key, value in config["task"].items() if key not in NOT_TASK_ARGUMENTS}
    return hydra.utils.instantiate(spec, attention=config["attention"], seed=config["seed"],
                                   data_dir=config["data_dir"], _recursive_=False, _convert_="all")
