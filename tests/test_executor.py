"""wq_redis.Executor as a concurrent.futures executor, and the queue in asyncio programs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import pytest
from conftest import wait_until
from everyday_tasks import cores_seen, divide, env_value, multiply, nap, square

import wq_redis as wq


@pytest.fixture
def executor(queue, workers):
    workers.start("--cores", "4")
    pool = wq.Executor(queue)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def test_futures_resolve_through_as_completed(executor):
    futures = [executor.submit(square, i) for i in range(20)]
    results = {f.result() for f in concurrent.futures.as_completed(futures, timeout=30)}
    assert results == {i * i for i in range(20)}
    assert all(isinstance(f, concurrent.futures.Future) and f.task_id is not None for f in futures)


def test_wait_first_completed_returns_the_quick_call_first(executor):
    slow, quick = executor.submit(nap, 10.0, "slow"), executor.submit(square, 3)
    done, not_done = concurrent.futures.wait([slow, quick], timeout=30, return_when=concurrent.futures.FIRST_COMPLETED)
    assert done == {quick} and not_done == {slow}
    assert quick.result() == 9


def test_an_exception_in_the_function_is_raised_by_result_with_the_remote_traceback(executor):
    future = executor.submit(divide, 1, 0)
    with pytest.raises(ZeroDivisionError) as caught:
        future.result(timeout=30)
    cause = caught.value.__cause__
    assert isinstance(cause, wq.RemoteTraceback)
    assert "in divide" in cause.text and "ZeroDivisionError" in cause.text
    assert isinstance(future.exception(), ZeroDivisionError)


def test_a_task_that_fails_as_a_task_raises_task_failed(executor):
    template = wq.Task("template")
    template.specify_running_time_max(0.5)
    future = executor.submit(nap, 10.0, template=template)
    with pytest.raises(wq.TaskFailed) as caught:
        future.result(timeout=30)
    assert caught.value.result == wq.WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME


def test_per_call_resources_reach_the_task(executor):
    two, default = executor.submit(cores_seen, resources={"cores": 2}), executor.submit(cores_seen)
    assert two.result(timeout=30) == "2" and default.result(timeout=30) == "1"
    assert two.task.resources_allocated.cores == 2


def test_a_task_template_gives_every_call_its_settings(executor):
    template = wq.Task("template")
    template.specify_environment_variable("COLOR", "blue")
    template.specify_cores(2)
    future = executor.submit(env_value, "COLOR", template=template)
    assert future.result(timeout=30) == "blue"
    assert future.task.resources_allocated.cores == 2


def test_executor_wide_resources_apply_unless_a_call_says_otherwise(redis_url, queue_name, workers):
    workers.start("--cores", "4")
    with wq.Executor(queue_name, redis_url=redis_url, resources={"cores": 2}) as pool:
        default, own = pool.submit(cores_seen), pool.submit(cores_seen, resources={"cores": 1})
        assert (default.result(timeout=30), own.result(timeout=30)) == ("2", "1")


def test_a_call_that_declares_nothing_takes_one_core_not_the_whole_worker(redis_url, queue_name, workers):
    workers.start("--cores", "4")
    with wq.Executor(queue_name, redis_url=redis_url) as pool:
        futures = [pool.submit(cores_seen) for _ in range(4)]
        assert [f.result(timeout=30) for f in futures] == ["1"] * 4
        assert all(f.task.resources_allocated.cores == 1 for f in futures)


def test_unknown_resource_names_are_refused(executor):
    with pytest.raises(ValueError, match="unknown resource"):
        executor.submit(square, 2, resources={"cpus": 2})


def test_map_yields_results_in_input_order_with_chunks(executor):
    assert list(executor.map(multiply, range(10), range(10), chunksize=3, timeout=30)) == [i * i for i in range(10)]


def test_cancelling_a_future_cancels_its_task(queue, executor):
    future = executor.submit(square, 2, resources={"cores": 64})  # no worker that large
    assert future.cancel() and future.cancelled()
    assert wait_until(lambda: queue.stats.tasks_cancelled == 1)


def test_shutdown_refuses_new_calls(executor):
    future = executor.submit(square, 5)
    executor.shutdown(wait=True)
    assert future.result() == 25
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(square, 1)


def test_an_executor_opened_by_queue_name_owns_its_queue(redis_url, queue_name, workers):
    workers.start("--cores", "2")
    with wq.Executor(queue_name, redis_url=redis_url) as pool:
        assert pool.submit(square, 7).result(timeout=30) == 49
    assert pool.queue._client is None  # closed with the executor


# -- asyncio -------------------------------------------------------------------------------
def test_futures_are_awaitable(executor):
    async def main():
        first = await executor.submit(square, 4)
        rest = await asyncio.gather(*(executor.submit(square, i) for i in range(5)))
        return first, rest

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (16, [0, 1, 4, 9, 16])


def test_the_executor_serves_run_in_executor(executor):
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, multiply, 6, 7)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 42


def test_wait_async_lets_the_event_loop_run_while_it_waits(queue, workers):
    workers.start("--cores", "1")
    queue.submit(wq.PythonTask(nap, 1.0, "late"))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    async def main():
        background = asyncio.create_task(ticker())
        started = time.monotonic()
        task = await queue.wait_async(30)
        background.cancel()
        return task, time.monotonic() - started

    task, waited = asyncio.run(main())
    assert task.output == "late"
    assert ticks >= waited / 0.05 * 0.5  # the loop kept ticking throughout the wait


def test_wait_async_times_out_with_none_and_returns_none_when_nothing_is_outstanding(queue):
    async def main():
        empty = await queue.wait_async(5)
        queue.submit(wq.Task("true"))  # no worker: stays waiting
        started = time.monotonic()
        timed_out = await queue.wait_async(0.3)
        return empty, timed_out, time.monotonic() - started

    empty, timed_out, waited = asyncio.run(main())
    assert empty is None and timed_out is None and 0.25 <= waited < 3
