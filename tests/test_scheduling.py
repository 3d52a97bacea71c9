"""Where and when tasks run: resource packing, tags, priorities, GPUs, categories."""

from __future__ import annotations

import itertools
import time

from conftest import drain, wait_until
from helpers_tasks import env_value, my_sum, timed_sleep

import wq_redis as wq


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals running at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def sleeper(cores: int, seconds: float = 1.0, tag: str | None = None) -> wq.PythonTask:
    task = wq.PythonTask(timed_sleep, seconds)
    task.specify_cores(cores)
    if tag:
        task.specify_tag(tag)
    return task


def test_a_task_that_declares_nothing_takes_the_whole_worker(queue, workers):
    workers.start("--cores", "4", "--memory", "1000", "--disk", "1000")
    queue.submit_many([wq.PythonTask(timed_sleep, 0.3) for _ in range(3)])
    done = drain(queue, 3)
    assert all((t.resources_allocated.cores, t.resources_allocated.memory) == (4, 1000) for t in done)
    assert max_overlap([t.output[:2] for t in done]) == 1


def test_four_core_worker_runs_four_one_core_tasks_at_once(queue, workers):
    workers.start("--cores", "4")
    queue.submit_many([sleeper(1) for _ in range(4)])
    done = drain(queue, 4)
    assert len({t.worker for t in done}) == 1
    assert max_overlap([t.output[:2] for t in done]) == 4


def test_three_core_and_one_core_share_a_worker_but_two_three_core_never_do(queue, workers):
    queue.tune("proportional-whole-tasks", 0)  # else a three-core task's share is the whole worker
    queue.submit_many([sleeper(3), sleeper(3), sleeper(1), sleeper(1)])
    workers.start("--cores", "4")
    done = drain(queue, 4)
    big = [t.output[:2] for t in done if t.resources_requested.cores == 3]
    small = [t.output[:2] for t in done if t.resources_requested.cores == 1]
    assert not overlaps(big[0], big[1])
    assert any(overlaps(b, s) for b, s in itertools.product(big, small))
    assert max_overlap([t.output[:2] for t in done]) <= 2


def test_a_task_larger_than_every_worker_waits(queue, workers):
    big = sleeper(8, 0.1)
    queue.submit(big)
    workers.start("--cores", "2")
    queue.submit(sleeper(1, 0.1))
    assert queue.wait(30).resources_requested.cores == 1
    assert queue.wait(1.0) is None
    assert queue.stats.tasks_waiting == 1


def test_memory_and_gpus_are_packed_too(queue, workers):
    workers.start("--cores", "4", "--memory", "2048", "--gpus", "1")
    tasks = []
    for _ in range(2):
        t = sleeper(1)
        t.specify_memory(2048)
        tasks.append(t)
    for _ in range(2):
        t = sleeper(1)
        t.specify_gpus(1)
        tasks.append(t)
    queue.submit_many(tasks)
    done = drain(queue, 4)
    mem = [t.output[:2] for t in done if t.resources_requested.memory]
    gpu = [t.output[:2] for t in done if t.resources_requested.gpus]
    assert not overlaps(*mem) and not overlaps(*gpu)


def test_tagged_worker_takes_only_its_tags(queue, workers, redis_url):
    workers.start("--cores", "2", "--tags", "blue")
    blue = [wq.PythonTask(my_sum, 1, i) for i in range(3)]
    red = [wq.PythonTask(my_sum, 2, i) for i in range(3)]
    for t in blue:
        t.specify_tag("blue")
    for t in red:
        t.specify_tag("red")
    queue.submit_many(red + blue)
    done = drain(queue, 3)
    assert {t.tag for t in done} == {"blue"}
    assert queue.wait(1.0) is None
    assert queue.stats.waiting_by_queue == {"c-1|red": 3}
    workers.start("--cores", "2")  # untagged: takes every tag
    assert {t.tag for t in drain(queue, 3)} == {"red"}


def test_higher_priority_runs_first(queue, workers):
    order = [0, 5, -1, 10, 5]
    tasks = []
    for prio in order:
        t = wq.PythonTask(timed_sleep, 0.05)
        t.specify_priority(prio)
        tasks.append(t)
    queue.submit_many(tasks)
    workers.start("--cores", "1")
    done = drain(queue, len(tasks))
    started = sorted(done, key=lambda t: t.output[0])
    assert [t.priority for t in started] == [10, 5, 5, 0, -1]
    fives = [t.id for t in started if t.priority == 5]
    assert fives == sorted(fives)  # FIFO among equals


def test_priority_holds_across_resource_classes(queue, workers):
    low = sleeper(2, 0.05)
    high = sleeper(1, 0.05)
    high.specify_priority(1)
    queue.submit_many([low, high])
    workers.start("--cores", "2")
    first, second = sorted(drain(queue, 2), key=lambda t: t.output[0])
    assert first is high and second is low


def test_gpu_task_sees_only_its_gpus(queue, workers):
    workers.start("--cores", "2", "--gpus", "2")
    gpu_tasks = []
    for _ in range(2):
        t = wq.PythonTask(env_value, "CUDA_VISIBLE_DEVICES")
        t.specify_gpus(1)
        gpu_tasks.append(t)
    cpu_task = wq.PythonTask(env_value, "CUDA_VISIBLE_DEVICES")
    command = wq.Task("echo gpus=$CUDA_VISIBLE_DEVICES")
    command.specify_gpus(2)
    queue.submit_many(gpu_tasks + [cpu_task, command])
    done = {t.id: t for t in drain(queue, 4)}
    assert all(done[t.id].output in ("0", "1") for t in gpu_tasks)
    assert done[cpu_task.id].output == ""  # a task without GPUs sees none
    assert done[command.id].output.strip() in ("gpus=0,1", "gpus=1,0")


def test_category_resources_apply_to_tasks_that_declare_none(queue, workers):
    queue.specify_category_max_resources("heavy", {"cores": 2, "memory": 100})
    t = wq.PythonTask(my_sum, 1, 1)
    t.specify_category("heavy")
    own = wq.PythonTask(my_sum, 1, 1)
    own.specify_category("heavy")
    own.specify_cores(1)
    queue.submit_many([t, own])
    workers.start("--cores", "2", "--memory", "1000")
    done = {x.id: x for x in drain(queue, 2)}
    assert done[t.id].resources_allocated.cores == 2
    assert done[t.id].resources_allocated.memory == 1000  # 2 of 2 cores: the worker's whole memory
    assert done[own.id].resources_allocated.cores == 1


def test_worker_takes_larger_classes_first_at_equal_priority(queue, workers):
    queue.submit_many([sleeper(1, 0.05) for _ in range(3)] + [sleeper(2, 0.05)])
    workers.start("--cores", "2")
    first = min(drain(queue, 4), key=lambda t: t.output[0])
    assert first.resources_requested.cores == 2


def test_claims_never_exceed_free_cores_with_many_waiting(queue, workers):
    queue.submit_many([sleeper(1, 0.2) for _ in range(12)])
    workers.start("--cores", "3")
    assert wait_until(lambda: queue.stats.tasks_running > 0)
    peak = 0
    for _ in range(20):
        peak = max(peak, queue.stats.committed_cores)
    done = drain(queue, 12)
    assert peak <= 3
    assert max_overlap([t.output[:2] for t in done]) <= 3


def test_a_big_task_is_not_starved_by_a_stream_of_small_ones(queue, workers):
    workers.start("--cores", "2", "--reserve-after", "0.5")
    # staggered small tasks: one core frees up while the other is still busy, every time
    queue.submit_many([sleeper(1, 0.25), sleeper(1, 0.4), sleeper(1, 0.25), sleeper(1, 0.4)])
    assert wait_until(lambda: queue.stats.tasks_running == 2)
    big = sleeper(2, 0.1)
    queue.submit(big)
    done: list[wq.Task] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(t is big for t in done):
        queue.submit_many([sleeper(1, 0.25), sleeper(1, 0.4)])  # the stream never dries up
        task = queue.wait(1)
        while task is not None:
            done.append(task)
            task = queue.wait(0)
    assert any(t is big for t in done), "the 2-core task never ran"
