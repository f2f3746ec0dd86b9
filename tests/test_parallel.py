"""`--jobs`: a stage's independent tasks give their results in task order, and each finished one is logged with the
stage's count, so a study of hours run in the background says where it is."""

from __future__ import annotations

import logging
import re

import pytest

from lethe.parallel import run_tasks


def _progress(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "lethe"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_come_in_task_order_and_each_finished_task_is_counted(jobs, caplog):
    tasks = [(pow, (2, 10)), (max, ([3, 9, 4],)), (sorted, ("cab",))]
    with caplog.at_level(logging.INFO, logger="lethe"):
        results = run_tasks(tasks, jobs, "squares", ["two to the tenth", "largest", "letters"])
    assert results == [1024, 9, ["a", "b", "c"]]
    lines = _progress(caplog)
    assert [int(re.match(r"squares: (\d) of 3 done", line)[1]) for line in lines] == [1, 2, 3]
    assert sorted(re.search(r"done \((.+), \d+ s\)", line)[1] for line in lines) == \
        ["largest", "letters", "two to the tenth"]
    assert all("left" in line for line in lines[:2]) and "left" not in lines[2]


def test_without_labels_a_task_is_named_by_its_function_and_a_wrong_count_is_refused(caplog):
    with caplog.at_level(logging.INFO, logger="lethe"):
        assert run_tasks([(abs, (-3,))], 1) == [3]
    assert _progress(caplog) == ["tasks: 1 of 1 done (abs, 0 s)"]
    with pytest.raises(ValueError, match="2 tasks but 1 labels"):
        run_tasks([(abs, (-3,)), (abs, (4,))], 1, "stage", ["only one"])
