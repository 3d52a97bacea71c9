"""WorkQueue.map, pair and tree_reduce: Work Queue's helpers, results in input order, progress."""

from __future__ import annotations

import pytest
from everyday_tasks import add_all, concat, product, reject_negative, square

import wq_redis as wq


@pytest.fixture
def busy_queue(queue, workers):
    workers.start("--cores", "4")
    return queue


def test_pair_calls_the_function_on_every_pair_in_product_order(busy_queue):
    assert busy_queue.pair(product, [1, 2, 3], [1, 10]) == [1, 10, 2, 20, 3, 30]


def test_pair_with_chunks_gives_the_same_results(busy_queue):
    assert busy_queue.pair(product, range(4), range(5), chunksize=7) == [x * y for x in range(4) for y in range(5)]


def test_tree_reduce_keeps_the_order_of_the_sequence(busy_queue):
    letters = [chr(ord("a") + i) for i in range(13)]
    assert busy_queue.tree_reduce(concat, letters) == "abcdefghijklm"
    assert busy_queue.tree_reduce(concat, letters, chunksize=3) == "abcdefghijklm"


def test_tree_reduce_runs_one_task_per_chunk_per_level(busy_queue):
    assert busy_queue.tree_reduce(add_all, range(10), chunksize=3) == 45
    # levels of 10 -> 4 -> 2 -> 1 values: 4 + 2 + 1 tasks
    assert busy_queue.stats.tasks_submitted == 7


def test_tree_reduce_of_one_value_runs_nothing_and_of_none_is_an_error(queue):
    assert queue.tree_reduce(add_all, [42]) == 42
    with pytest.raises(ValueError, match="empty"):
        queue.tree_reduce(add_all, [])
    with pytest.raises(ValueError, match="chunksize"):
        queue.tree_reduce(add_all, [1, 2], chunksize=1)
    assert queue.stats.tasks_submitted == 0


def test_tree_reduce_raises_the_error_of_a_failed_chunk(busy_queue):
    with pytest.raises(ValueError, match="negative") as caught:
        busy_queue.tree_reduce(reject_negative, [1, 2, -3, 4, 5, 6])
    assert isinstance(caught.value.__cause__, wq.RemoteTraceback)


def test_map_shows_a_progress_bar_when_forced(queue, workers, capsys):
    workers.start("--cores", "2")
    assert queue.map(square, range(6), progress=True) == [i * i for i in range(6)]
    err = capsys.readouterr().err
    assert "map" in err and "6/6" in err


def test_progress_is_off_by_default_without_a_terminal_and_when_disabled(busy_queue, capsys):
    assert busy_queue.pair(product, [1, 2], [3]) == [3, 6]
    assert busy_queue.tree_reduce(add_all, [1, 2, 3], progress=False) == 6
    assert capsys.readouterr().err == ""
