"""Hostile Redis clients, property-based: garbage anywhere in a queue's keys never kills a
worker, never costs the manager one of its own tasks or gives it a stranger's, and under
a secret never gets a pickle loaded.

Each generated case (``Case``): a hostile plan (hostile_strategies.py) is written into
Redis, then a fresh manager submits its own tasks (a call with arguments, one without, a
command), drains them and reads every result as a user would (``output``), and the
invariants are checked:
  * every worker process is alive;
  * every task the manager accepted came back from ``wait()`` exactly once, with its
    real result (also when the plan planted a hash at its id before the manager submitted
    it: submit.lua replaces what the manager did not write) unless the plan damaged the
    body of its function; no other id came back;
    ``wait()`` raised nothing; ``empty()`` was False while one was out and is True after;
  * no marker file exists (a malicious pickle was loaded).
The manager's tasks are submitted after the garbage, so when they are back the workers
have passed it (claims are FIFO within a queue): no blind sleeps.  Between cases the
queue's keys are reset without restarting the workers (``Fleet.reset``).

Long-lived workers per configuration, for the whole module: a 1-core worker (its warm
child's "lane" claims and runs quick calls itself) and a 2-core one; without a secret,
and with one (``--secret``, the manager's ``secret=``).

Environment: WQ_FUZZ_SCALE multiplies every family's examples (default 1: 1,000 cases
in all); WQ_FUZZ_CASE_TIMEOUT is how long a case waits for its tasks (default 5 s);
WQ_FUZZ_REPORT=PATH records each failing case as a JSON line there instead of failing
(to survey every defect in one run), WQ_FUZZ_NO_SHRINK=1 skips shrinking.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import pytest
import redis
from conftest import Workers, wait_until
from helpers_tasks import my_sum
from hostile_strategies import (
    Evil,
    ForeignIds,
    HashFields,
    IdRef,
    KeyRef,
    PicklePlacement,
    WrongType,
    foreign_ids,
    hash_fields,
    malicious_pickle,
    pickle_placements,
    wrong_types,
)
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import wq_redis as wq
from wq_redis.embedded.server import RedisServer
from wq_redis.protocol import packing
from wq_redis.protocol.keys import QueueKeys
from wq_redis.protocol.resources import ResourceClass, category_hex, queue_member
from wq_redis.protocol.serialize import digest_pickle, pack_spec
from wq_redis.worker.loop import WorkerOptions, idle_wait_seconds

# hostile: run in CI; the timeout leaves room for hypothesis to shrink a failing case
pytestmark = [pytest.mark.hostile, pytest.mark.timeout(600)]

SECRET = "fuzz-s3cret"
CONFIGS = {"plain": None, "secret": SECRET}
SCALE = float(os.environ.get("WQ_FUZZ_SCALE", "1"))
CASE_TIMEOUT = float(os.environ.get("WQ_FUZZ_CASE_TIMEOUT", "5"))
LEASE_SECONDS = 2  # the workers' lease: short, so that a case's lost leases come back fast
# once the garbage is gone, an idle worker notices at the end of its wait at the latest
# (nothing rings when a key is repaired): the tasks' time after a repair includes it
REPAIR_TIMEOUT = CASE_TIMEOUT + idle_wait_seconds(WorkerOptions(lease_seconds=LEASE_SECONDS))
REPORT = os.environ.get("WQ_FUZZ_REPORT")
OWN_MEMBER = queue_member(ResourceClass(), None)  # where the manager's tasks wait
FOREIGN_MEMBER = queue_member(ResourceClass(), "hostile")  # a registered queue none of them uses
AUTO_CATEGORY = "fuzz-auto"  # one task of each case is sized by an automatic category (its label: keys.label)
FOREIGN_BASE = 10_000_000  # foreign ids: far past any id a manager reserves in this module
EXPECTED = {0: 5, 1: None, 2: "fuzz-ok\n"}  # own task index -> output (1: the case's constant)


def fuzz_settings(examples: int) -> Callable[[Any], Any]:
    phases = [Phase.explicit, Phase.generate] + ([] if os.environ.get("WQ_FUZZ_NO_SHRINK") else [Phase.shrink])
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def constant(value: int) -> Callable[[], int]:
    """A call without arguments (the shape issue 14 item 1's pack attack starts from),
    pickled by value: a function body, and so a digest, of its own per case."""
    return lambda: value


# -- the workers and their Redis, for the whole module ----------------------------------
class Fleet:
    """One configuration's queue and its long-lived workers (restarted if one dies, after
    the case that killed it has been reported)."""

    def __init__(self, redis_url: str, config: str, secret: str | None) -> None:
        self.config = config
        self.secret = secret
        self.queue = f"fuzz-{config}"
        self.keys = QueueKeys(self.queue)
        self.client = redis.Redis.from_url(redis_url)
        self.redis_url = redis_url
        self.pool = Workers(redis_url, self.queue)
        self.host = socket.gethostname()
        self.specs = {f"lane-{config}": "1", f"pair-{config}": "2"}  # name -> cores
        self.processes: dict[str, Any] = {}
        self.seq_floor = 0
        for name in self.specs:
            self._start(name)
        assert wait_until(lambda: self.client.zcard(self.keys.workers) == len(self.specs), timeout=30)

    def _start(self, name: str) -> None:
        args = ["--cores", self.specs[name], "--name", name, "--lease-seconds", str(LEASE_SECONDS)]
        if self.secret:
            args += ["--secret", self.secret]
        self.processes[name] = self.pool.start(*args)

    def worker_names(self) -> list[str]:
        return [f"{name}@{self.host}" for name in self.specs]

    def dead(self) -> list[str]:
        """Workers that exited (restarted, so that the next case has its workers)."""
        gone = []
        for name, process in self.processes.items():
            if process.poll() is not None:
                gone.append(f"worker {name} exited with status {process.returncode}")
        for name in [n for n, p in self.processes.items() if p.poll() is not None]:
            self._start(name)
        return gone

    def reset(self) -> None:
        """Every key of the queue goes, except the counter of ids and the workers'
        registration (when they still have their own types): the next case starts on an
        empty queue served by the same worker processes."""
        keep = {self.keys.seq: b"string", self.keys.workers: b"zset"}
        for name in self.worker_names():
            keep[self.keys.worker(name)] = b"hash"
            keep[self.keys.worker_wake(name)] = b"list"
            keep[self.keys.control(name)] = b"list"
        doomed = []
        for key in self.client.scan_iter(match=self.keys.prefix + "*", count=1000):
            name = key.decode(errors="replace")
            if keep.get(name) != self.client.type(key):
                doomed.append(key)
        if doomed:
            self.client.delete(*doomed)
        try:
            seq = int(self.client.get(self.keys.seq) or 0)
        except ValueError:
            seq = -1
        if seq < self.seq_floor:
            self.client.set(self.keys.seq, self.seq_floor)
        self.seq_floor = max(seq, self.seq_floor)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes.values():
            process.wait(10)
        self.client.close()


@pytest.fixture(scope="module")
def fuzz_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def marker_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("markers"))


@pytest.fixture(scope="module")
def fleets(fuzz_redis: RedisServer) -> Iterator[dict[str, Fleet]]:
    started: dict[str, Fleet] = {}

    class Lazy(dict):  # a configuration's workers start with its first case
        def __missing__(self, config: str) -> Fleet:
            fleet = started[config] = self[config] = Fleet(fuzz_redis.url, config, CONFIGS[config])
            return fleet

    yield Lazy()
    for fleet in started.values():
        fleet.stop()


# -- one case ---------------------------------------------------------------------------
class Case:
    """One hostile plan against a fresh manager; ``violations`` lists what went wrong."""

    def __init__(self, fleet: Fleet, marker_dir: str) -> None:
        self.fleet = fleet
        self.client = fleet.client
        self.keys = fleet.keys
        self.marker_dir = marker_dir
        fleet.reset()
        self.seq = int(self.client.get(self.keys.seq) or 0)
        self.fn = constant(self.seq)
        self.digest = digest_pickle(self.fn)[0]
        # The manager's first ids are the next ones of the counter (no packs: a new
        # manager knows no function's pace, and a secret is never packed).
        self.own_ids = [self.seq + 1 + i for i in range(3)]
        self.tampered: set[int] = set()  # own tasks whose function body the plan damaged: a clean failure will do
        self.restore: list[tuple[str, bytes | None]] = []  # (key, DUMP) put back after the garbage
        # after the repair, ring the queue's wake key as a manager's next submit would: the
        # workers claim now, not at the end of their idle wait (garbage at a wake key itself
        # leaves it unrung: there the end of the idle wait is what the case checks)
        self.ring_after_repair = False
        self.violations: list[str] = []

    # symbolic names of hostile_strategies, resolved
    def key(self, role: str) -> str:
        k = self.keys
        fixed = {
            "seq": k.seq,
            "stats": k.stats,
            "queues": k.registry,
            "leases": k.leases,
            "done": k.done,
            "retrieving": k.retrieving,
            "done:wake": k.done_wake,
            "workers": k.workers,
            "wake": k.new_queue_wake,
            "categories": k.categories,
            "blocked": k.blocked_hosts,
            "reaper": k.reaper_lock,
            "ready:own": k.ready(OWN_MEMBER),
            "fifo:own": k.fifo(OWN_MEMBER),
            "wake:own": k.wake(OWN_MEMBER),
            "ready:foreign": k.ready(FOREIGN_MEMBER),
            "fifo:foreign": k.fifo(FOREIGN_MEMBER),
            "wake:foreign": k.wake(FOREIGN_MEMBER),
            "t:own:0": k.task(self.own_ids[0]),
            "t:own:0:args": k.big_field(self.own_ids[0], "args"),
            "t:foreign": k.task(FOREIGN_BASE),
            "t:foreign:args": k.big_field(FOREIGN_BASE, "args"),
            "w:worker": k.worker(self.fleet.worker_names()[0]),
            "ww:worker": k.worker_wake(self.fleet.worker_names()[0]),
            "w:ghost": k.worker("ghost@nowhere"),
            "ww:ghost": k.worker_wake("ghost@nowhere"),
            "wc:worker": k.control(self.fleet.worker_names()[0]),
            "v:token": k.value("ghost:1:1"),
            "fn:own": k.function(self.digest),
            "fn:other": k.function("0" * 64),
            "incarnation": k.incarnation,
            "file:other": k.file("0" * 64),
            "label:own": k.label(category_hex(AUTO_CATEGORY)),
            "shards": k.shards,
        }
        return fixed[role]

    def task_id(self, ref: IdRef) -> str:
        if ref.kind == "own":
            return str(self.own_ids[int(ref.value)])
        if ref.kind == "foreign":
            return str(FOREIGN_BASE + int(ref.value))
        return str(ref.value)

    def value(self, value: Any) -> bytes:
        if isinstance(value, Evil):
            return malicious_pickle(os.path.join(self.marker_dir, f"m{self.seq}"), value.shape, value.protocol)
        if value == "own":
            return OWN_MEMBER.encode()
        return value if isinstance(value, bytes) else str(value).encode()

    def register(self, member: str) -> None:
        """A queue the hostile client adds to the registry, with its wake-ups rung."""
        self.client.sadd(self.keys.registry, member)
        for key in (self.keys.new_queue_wake, self.keys.wake(member)):
            self.client.lpush(key, 1)
            self.client.ltrim(key, 0, 0)

    # the case itself
    def own_tasks(self) -> list[wq.Task]:
        sized = wq.Task("echo fuzz-ok")
        sized.specify_category(AUTO_CATEGORY)
        return [wq.PythonTask(my_sum, 2, 3), wq.PythonTask(self.fn), sized]

    def run(self, apply: Callable[[Case], None], tolerated: bool = True, at_open: bool = False) -> list[str]:
        """Write the plan, run the manager's tasks through it, check the invariants.
        ``tolerated``: the tasks must come back while the garbage is there (else only
        once it is gone; the manager may meet Redis errors meanwhile).  ``at_open``: the
        plan is written before the manager opens the queue (a key read only then)."""
        if at_open:
            apply(self)
        queue = wq.WorkQueue(self.fleet.queue, redis_url=self.fleet.redis_url, secret=self.fleet.secret)
        try:
            queue.specify_category_mode(AUTO_CATEGORY, wq.WORK_QUEUE_ALLOCATION_MODE_MAX)
            if not at_open:
                apply(self)
            accepted: list[int] = []
            try:
                accepted = queue.submit_many(self.own_tasks())
            except redis.ResponseError as exc:
                if tolerated:
                    self.violations.append(f"submit_many raised {exc!r}")
            if accepted and accepted != self.own_ids:
                raise AssertionError(f"the harness expected ids {self.own_ids}, the manager gave {accepted}")
            returned = self.drain(queue, set(accepted), strict=tolerated)
            if not tolerated:
                for key, dump in self.restore:
                    self.client.delete(key)
                    if dump is not None:
                        self.client.restore(key, 0, dump, replace=True)
                if self.ring_after_repair:
                    self.client.lpush(self.keys.wake(OWN_MEMBER), 1)
                    self.client.ltrim(self.keys.wake(OWN_MEMBER), 0, 0)
                returned += self.drain(
                    queue, set(accepted) - {t.id for t in returned}, strict=True, timeout=REPAIR_TIMEOUT
                )
            self.check(queue, accepted, returned)
        finally:
            try:
                queue.close()
            except Exception as exc:
                self.violations.append(f"close() raised {exc!r}")
        self.violations += self.fleet.dead()
        markers = os.listdir(self.marker_dir)
        if markers:
            self.violations.append(f"a malicious pickle was loaded (marker files {markers})")
            for name in markers:
                os.unlink(os.path.join(self.marker_dir, name))
        return self.violations

    def drain(
        self, queue: wq.WorkQueue, wanted: set[int], strict: bool, timeout: float = CASE_TIMEOUT
    ) -> list[wq.Task]:
        """``wait()`` until every id in ``wanted`` is back or ``timeout`` is up."""
        returned: list[wq.Task] = []
        deadline = time.monotonic() + timeout
        while wanted - {t.id for t in returned}:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if strict:
                    self.violations.append(
                        f"tasks {sorted(wanted - {t.id for t in returned})} did not come back within {timeout:g} s"
                    )
                break
            try:
                task = queue.wait(min(remaining, 1.0))
            except redis.ResponseError as exc:
                if strict:
                    self.violations.append(f"wait() raised {exc!r}")
                    break
                time.sleep(0.05)
                continue
            except Exception as exc:
                self.violations.append(f"wait() raised {exc!r}")
                break
            if task is not None:
                returned.append(task)
                if wanted - {t.id for t in returned} and self._empty(queue):
                    self.violations.append(
                        f"empty() was True with tasks {sorted(wanted - {t.id for t in returned})} not back"
                    )
                    break
            elif self._empty(queue):
                self.violations.append(
                    f"wait() and empty() said nothing is outstanding with tasks "
                    f"{sorted(wanted - {t.id for t in returned})} not back"
                )
                break
        return returned

    def _empty(self, queue: wq.WorkQueue) -> bool:
        try:
            return queue.empty()
        except redis.ResponseError:
            return False

    def check(self, queue: wq.WorkQueue, accepted: list[int], returned: list[wq.Task]) -> None:
        ids = [t.id for t in returned]
        foreign = [i for i in ids if i not in accepted]
        if foreign:
            self.violations.append(f"wait() returned ids the manager never submitted: {foreign}")
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            self.violations.append(f"wait() returned tasks more than once: {twice}")
        for task in returned:
            output = task.output  # what a user reads: loads a PythonTask's return value
            task.total_bytes_transferred, task.total_transfer_time  # noqa: B018  # parse the transfer field
            if task.id not in accepted:
                continue
            index = accepted.index(task.id)
            expected = self.seq if index == 1 else EXPECTED[index]
            if task.id in self.tampered and (self.fleet.secret is None or task.result != wq.WORK_QUEUE_RESULT_SUCCESS):
                continue  # its function body was damaged: any clean failure will do (and, without a secret, any result)
            if task.result != wq.WORK_QUEUE_RESULT_SUCCESS or output != expected:
                self.violations.append(
                    f"task {task.id} came back with result {task.result_str}, output {output!r} "
                    f"(expected {expected!r}), error {task.error!r}"
                )
        if accepted and len(set(ids) & set(accepted)) == len(accepted):
            try:
                if not queue.empty():
                    self.violations.append("empty() is False after every task came back")
            except Exception as exc:
                self.violations.append(f"empty() raised {exc!r}")


def verdict(family: str, config: str, plan: Any, violations: list[str]) -> None:
    if not violations:
        return
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(
                json.dumps({"family": family, "config": config, "plan": repr(plan), "violations": violations}) + "\n"
            )
        return
    raise AssertionError(f"{family} ({config}): {plan!r}\n  " + "\n  ".join(violations))


# -- the plans, written ------------------------------------------------------------------
def write_type(client: redis.Redis, key: str, kind: str, payload: bytes) -> None:
    client.delete(key)
    if kind == "string":
        client.set(key, payload)
    elif kind == "list":
        client.rpush(key, payload)
    elif kind == "hash":
        client.hset(key, "f", payload)
    elif kind == "set":
        client.sadd(key, payload)
    elif kind == "zset":
        client.zadd(key, {payload: 1})
    elif kind == "stream":
        client.xadd(key, {"f": payload})
    # "none": deleted


WAKE_ROLES = frozenset({"wake", "wake:own", "done:wake"})  # garbage there: no ring after the repair


def apply_wrong_type(plan: WrongType) -> Callable[[Case], None]:
    def apply(case: Case) -> None:
        key = case.key(plan.key.role)
        if plan.key.role.endswith(":foreign"):
            case.register(FOREIGN_MEMBER)
        if plan.key.role == "fn:own":
            case.tampered.add(case.own_ids[1])
        if not plan.tolerated:
            case.restore.append((key, case.client.dump(key)))
            case.ring_after_repair = plan.key.role not in WAKE_ROLES
        write_type(case.client, key, plan.type, plan.payload)

    return apply


def apply_hash_fields(plan: HashFields) -> Callable[[Case], None]:
    def apply(case: Case) -> None:
        task_id = case.task_id(plan.target)
        mapping = {name: case.value(value) for name, value in plan.fields}
        case.client.hset(case.keys.task(task_id), mapping=mapping)
        if plan.target.kind == "own":
            return  # planted before the manager submits: replaced, the task must come back with its real result
        if plan.foreign_in == "done":
            case.client.rpush(case.keys.done, task_id)
        else:
            case.register(OWN_MEMBER)
            case.client.rpush(case.keys.fifo(OWN_MEMBER), task_id)

    return apply


def apply_foreign_ids(plan: ForeignIds) -> Callable[[Case], None]:
    def apply(case: Case) -> None:
        for role, refs in plan.pushes:
            key = case.key(role)
            ids = [case.task_id(ref) for ref in refs]
            if role.endswith(":foreign"):
                case.register(FOREIGN_MEMBER)
            elif role.endswith(":own"):
                case.register(OWN_MEMBER)
            if role in ("done", "fifo:own", "fifo:foreign"):
                case.client.rpush(key, *ids)
            elif role == "retrieving":
                case.client.sadd(key, *ids)
            else:
                case.client.zadd(key, {task_id: plan.score for task_id in ids})

    return apply


def apply_pickle(plan: PicklePlacement) -> Callable[[Case], None]:
    def apply(case: Case) -> None:
        c, k = case.client, case.keys
        evil = case.value(plan.evil)
        python = case.own_ids[plan.target % 2]  # one of the manager's PythonTasks
        foreign = FOREIGN_BASE + plan.target
        place = plan.place
        own_writes = {
            "own pack member args (n, pa)": (python, {"n": 1, "pa": packing.dump([(python, evil)])}),
            "own pack member results (n, pr)": (
                python,
                {"n": 1, "pr": packing.dump([(python, {b"r": b"0", b"val": evil})])},
            ),
            "own large args beside the hash (big, t:ID:args)": (python, {"big": "args"}),
            "own return value beside the hash (vk, v:TOKEN)": (python, {"vk": k.value("hostile")}),
            "own planted val of a command task": (case.own_ids[2], {"val": evil}),
        }
        if place in own_writes:
            task_id, fields = own_writes[place]
            c.hset(k.task(task_id), mapping=fields)  # planted before the manager submits: replaced
            c.set(k.big_field(task_id, "args"), evil)
            c.set(k.value("hostile"), evil)
        elif place == "function body at fn:DIGEST":
            c.set(k.function(case.digest), evil)  # the manager's SET NX keeps it
            case.tampered.add(case.own_ids[1])
        elif place.startswith("foreign queued"):
            # a real function body (it verifies against its digest): only the arguments are hostile
            body = cloudpickle.dumps(len)
            digest, _ = digest_pickle(len)
            c.set(k.function(digest), body)
            fields: dict[str, Any] = {"s": 1, "q": OWN_MEMBER, "fn": bytes.fromhex(digest), "sig": b"forged:00"}
            if place == "foreign queued task args":
                fields["args"] = evil
            else:
                fields.update(n=1, pa=packing.dump([(foreign, evil)]))
            c.hset(k.task(foreign), mapping=fields)
            case.register(OWN_MEMBER)
            c.rpush(k.fifo(OWN_MEMBER), foreign)
        else:  # a finished task nobody submitted, pushed to the done list
            fields = {"s": 3, "r": 0, "q": OWN_MEMBER, "spec": pack_spec({"kind": "py", "command": "python:x"})}
            if place == "foreign finished val":
                fields["val"] = evil
            elif place == "foreign finished pack results":
                fields.update(
                    n=1, pa=packing.dump([(foreign, b"")]), pr=packing.dump([(foreign, {b"r": b"0", b"val": evil})])
                )
            else:
                fields["vk"] = k.value("hostile")
                c.set(k.value("hostile"), evil)
            c.hset(k.task(foreign), mapping=fields)
            c.rpush(k.done, foreign)
            if plan.target == 2:  # ... and counted as submitted, as a manager would
                c.hincrby(k.stats, "submitted", 1)

    return apply


# -- the families: 1,000 cases in all (x WQ_FUZZ_SCALE) ---------------------------------
@pytest.mark.parametrize("config", sorted(CONFIGS))
@given(plan=wrong_types())
@example(plan=WrongType(KeyRef("incarnation"), "none", b""))  # Redis lost the queue's state
@example(plan=WrongType(KeyRef("incarnation"), "string", b"garbage"))  # another incarnation, not a token
@example(plan=WrongType(KeyRef("incarnation"), "string", b"1"))  # another incarnation, a token
@example(plan=WrongType(KeyRef("incarnation"), "hash", b"1"))
@example(plan=WrongType(KeyRef("t:own:0"), "list", b"1"))  # at the manager's next id
@example(plan=WrongType(KeyRef("shards"), "hash", b"1"))  # read when the manager opens the queue
@fuzz_settings(100)
def test_a_wrong_type_at_any_key_of_the_schema(config, plan, fleets, marker_dir):
    case = Case(fleets[config], marker_dir)
    run = case.run(apply_wrong_type(plan), tolerated=plan.tolerated, at_open=plan.at_open)
    verdict("wrong type", config, plan, run)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@given(plan=hash_fields())
@fuzz_settings(150)
def test_garbage_fields_in_task_hashes(config, plan, fleets, marker_dir):
    case = Case(fleets[config], marker_dir)
    verdict("hash fields", config, plan, case.run(apply_hash_fields(plan)))


@pytest.mark.parametrize("config", sorted(CONFIGS))
@given(plan=foreign_ids())
@fuzz_settings(150)
def test_foreign_ids_in_every_list_of_ids(config, plan, fleets, marker_dir):
    case = Case(fleets[config], marker_dir)
    verdict("foreign ids", config, plan, case.run(apply_foreign_ids(plan)))


@pytest.mark.parametrize("config", sorted(CONFIGS))
@given(data=st.data())
@fuzz_settings(100)
def test_malicious_pickles_are_never_loaded(config, data, fleets, marker_dir):
    plan = data.draw(pickle_placements(secret=CONFIGS[config] is not None), label="plan")
    case = Case(fleets[config], marker_dir)
    verdict("pickles", config, plan, case.run(apply_pickle(plan)))
