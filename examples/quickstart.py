"""wq-redis quickstart: Work Queue's seed example, a command-line task, and a map.

Runs on this machine only: no Redis URL is given (and none should be set in WQ_REDIS_URL
or REDIS_URL), so WorkQueue starts a private embedded Redis server, and
``local_workers=2`` starts two ``wq-redis worker`` processes against it.  Both stop when
the queue is closed at the end of the ``with`` block.

    .venv/bin/python examples/quickstart.py      # or: make demo

Each local worker declares 4 cores and 1 GPU so that the seed task (4 cores, 1 GPU) can
run on any machine; on a machine with fewer cores or no GPU the worker logs a warning
that the declared resources exceed what it detected.  That is expected here.
"""

import os
import sys
import tempfile

import wq_redis as wq


# -- 1. Work Queue's seed example, with only the import changed ----------------------------
def my_sum(x, y):

    return x + y


def square(x):
    return x * x


def main() -> int:
    with wq.WorkQueue("demo", local_workers=2, local_worker_resources={"cores": 4, "gpus": 1}) as queue:
        task = wq.PythonTask(my_sum, 10, 20)
        task.specify_cores(4)
        task.specify_gpus(1)
        task.specify_tag("hydrazine")
        queue.submit(task)

        task = queue.wait(30)  # generous: the first wait also covers the workers starting up
        if task:
            print(f"task {task.id} completed with result {task.output}")
        if task is None or task.output != 30:
            print(
                f"FAILED: the seed task did not come back with 30 (got {task.output if task else None!r})",
                file=sys.stderr,
            )
            if task is not None:
                print(
                    "result: {}  error: {}\n{}".format(task.result_str, task.error, task.std_output or ""),
                    file=sys.stderr,
                )
            return 1

        # -- 2. the command-line twin: a Task with an input file and an output file ---------
        with tempfile.TemporaryDirectory(prefix="wq-quickstart-") as tmp:
            source = os.path.join(tmp, "numbers.txt")
            result = os.path.join(tmp, "total.txt")
            with open(source, "w") as handle:
                handle.write("10\n20\n")
            # The command runs in a sandbox on the worker: numbers.txt is copied in before it
            # starts, total.txt is brought back to `result` when it ends.
            task = wq.Task(
                "awk '{ s += $1 } END { print s }' numbers.txt > total.txt && echo summed $(wc -l < numbers.txt) lines"
            )
            task.specify_input_file(source, "numbers.txt")
            task.specify_output_file(result, "total.txt")
            task.specify_tag("hydrazine")
            queue.submit(task)
            task = queue.wait(30)
            if task is None or task.result != wq.WORK_QUEUE_RESULT_SUCCESS or task.return_status != 0:
                print(
                    "FAILED: the command task did not succeed: {!r} {}".format(task, task.error if task else ""),
                    file=sys.stderr,
                )
                return 1
            print(f"task {task.id} exited with {task.return_status}; its output: {task.std_output.strip()}")
            with open(result) as handle:
                total = handle.read().strip()
            print(f"total.txt came back holding: {total}")
            if total != "30":
                print("FAILED: total.txt should hold 30", file=sys.stderr)
                return 1

        # -- 3. map: 1000 PythonTasks, results in input order ------------------------------
        # progress=True forces the progress bar on.  The default (progress=None) shows it
        # only when stderr is a terminal; the demo always shows it so that `make demo`
        # under CI or a pipe looks the same as in a terminal.
        results = queue.map(square, range(1000), progress=True)
        expected = sum(x * x for x in range(1000))
        print(f"map returned {len(results)} results, sum {sum(results)}")
        if len(results) != 1000 or sum(results) != expected:
            print(f"FAILED: expected 1000 results summing to {expected}", file=sys.stderr)
            return 1

        stats = queue.stats
        print(f"stats: tasks_done={stats.tasks_done} workers_connected={stats.workers_connected}")
    # leaving the `with` block stopped the local workers and the embedded Redis server
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
