"""The porting table (docs/porting-from-work-queue.md) is complete and true: every call of
Work Queue's Task, PythonTask and WorkQueue has a row, and every twin it names exists."""

from __future__ import annotations

import os
import re
import warnings

import pytest

import wq_redis as wq

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "porting-from-work-queue.md")

# Work Queue's Python binding (ndcctools.work_queue), public calls and properties.
WORK_QUEUE_API = {
    "Task": """clone specify_command specify_coprocess specify_algorithm specify_tag specify_category
        specify_feature specify_file specify_url specify_file_command specify_file_piece specify_input_file
        specify_output_file specify_directory specify_buffer specify_snapshot_file specify_max_retries specify_cores
        specify_memory specify_disk specify_gpus specify_priority specify_end_time specify_start_time_min
        specify_running_time specify_running_time_max specify_running_time_min specify_environment_variable
        specify_monitor_output tag category command priority algorithm std_output output id return_status result
        result_str total_submissions exhausted_attempts host hostname submit_time finish_time
        total_cmd_exhausted_execute_time app_delay send_input_start send_input_finish execute_cmd_start
        execute_cmd_finish receive_output_start receive_output_finish total_bytes_received total_bytes_sent
        total_bytes_transferred total_transfer_time cmd_execution_time total_cmd_execution_time resources_measured
        limits_exceeded resources_requested resources_allocated""",
    "PythonTask": "output specify_environment specify_package",
    "WorkQueue": """name port using_ssl stats stats_hierarchy stats_category status workers_summary
        specify_category_mode specify_category_autolabel_resource task_state enable_monitoring enable_monitoring_full
        activate_fast_abort activate_fast_abort_category specify_draining_by_hostname empty hungry specify_algorithm
        specify_task_order specify_name specify_manager_preferred_connection specify_master_preferred_connection
        specify_min_taskid specify_priority specify_num_tasks_left specify_manager_mode specify_master_mode
        specify_catalog_server specify_log specify_transactions_log specify_password specify_password_file
        specify_max_resources specify_min_resources specify_category_max_resources specify_category_min_resources
        specify_category_first_allocation_guess initialize_categories cancel_by_taskid cancel_by_tasktag
        cancel_by_category shutdown_workers block_host blacklist block_host_with_timeout blacklist_with_timeout
        unblock_host blacklist_clear invalidate_cache_file specify_keepalive_interval specify_keepalive_timeout
        estimate_capacity tune submit wait wait_for_tag wait_for_task_id application_info map pair tree_reduce
        remote_map remote_pair remote_tree_reduce""",
}


def _rows(section: str) -> list[tuple[set[str], str, str]]:
    """(Work Queue names, wq-redis cell, notes) of each row of one section's table."""
    text = open(DOC).read()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or cells[0] in ("Work Queue", "---"):
            continue
        names = {token.split("(")[0] for token in re.findall(r"`([^`]+)`", cells[0])}
        rows.append((names, cells[1], cells[2]))
    return rows


@pytest.mark.parametrize("section", sorted(WORK_QUEUE_API))
def test_every_work_queue_call_has_a_row(section):
    listed = set().union(*(names for names, _, _ in _rows(section)))
    assert set(WORK_QUEUE_API[section].split()) - listed == set()


def _instances(queue):
    return {"Task": wq.Task("true"), "PythonTask": wq.PythonTask(pow, 2, 3), "WorkQueue": queue}


@pytest.mark.parametrize("section", sorted(WORK_QUEUE_API))
def test_every_twin_in_the_table_exists(section, queue):
    obj = _instances(queue)[section]
    missing = [
        name
        for names, twin, _ in _rows(section)
        if twin != "—"
        for name in names
        if name.isidentifier() and not hasattr(obj, name) and not hasattr(wq, name)
    ]  # wq: constructors
    assert missing == []


def test_ignored_calls_warn_and_unavailable_calls_say_what_to_do_instead(queue):
    with pytest.warns(UserWarning, match="no effect"):
        queue.activate_fast_abort(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        queue.activate_fast_abort(3)  # once is enough
    with pytest.raises(NotImplementedError, match="Redis URL"):
        queue.specify_password("secret")
    with pytest.raises(NotImplementedError, match="use PythonTask"):
        wq.Task("true").specify_coprocess("my-coprocess")


def test_status_and_workers_summary_describe_the_queue(queue, workers):
    queue.submit(wq.Task("true"))
    assert queue.status("queue")[0]["submitted"] == 1
    workers.start("--cores", "2", "--memory", "1000", "--disk", "1000")
    assert queue.wait(30) is not None
    assert queue.workers_summary() == [{"workers": 1, "cores": 2, "memory": 1000, "disk": 1000, "gpus": 0}]
    assert queue.status("workers")[0]["resources"]["cores"] == 2


def test_clone_gives_a_task_that_can_be_submitted_again(queue):
    task = wq.Task("true")
    task.specify_cores(2)
    queue.submit(task)
    copy = task.clone()
    assert copy.id is None and copy.result is None and copy.resources_requested.cores == 2
    assert queue.submit(copy) != task.id
