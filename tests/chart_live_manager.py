"""The manager of tests/test_deploy_redis_live.py.  It runs on a host (network namespace)
of its own, because the chart's URL names the sentinels by their pod DNS names, which only
the test's hosts files resolve.  Each line on stdin is a count: it submits that many
`hostname` tasks through WQ_REDIS_URL (the chart's ``redis+sentinel://`` URL), waits for
them and prints them as one JSON line; end of input closes the queue.

Run as: python tests/chart_live_manager.py QUEUE
"""

from __future__ import annotations

import json
import os
import sys
import time

import wq_redis as wq


def main() -> None:
    # the sentinel example's managers: completions wait for one replica, as its workers' do
    with wq.WorkQueue(sys.argv[1], redis_url=os.environ["WQ_REDIS_URL"], durability="replica") as queue:
        for line in sys.stdin:
            tasks = [wq.Task("hostname") for _ in range(int(line))]
            queue.submit_many(tasks)
            done: list[wq.Task] = []
            deadline = time.monotonic() + 60
            while len(done) < len(tasks) and time.monotonic() < deadline:
                task = queue.wait(5)
                if task is not None:
                    done.append(task)
            report = [
                {"id": t.id, "result": t.result, "exit": t.return_status, "output": t.output, "host": t.hostname}
                for t in done
            ]
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
