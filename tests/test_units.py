"""Unit specifications: pure functions and classes, no Redis server and no worker process.

Resource classes, the key schema, spec envelopes, the function cache, the Task API's
validation, Work Queue's codes, the worker's resource books and the stats arithmetic.
Each test states one behaviour in its name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import cloudpickle
import pytest
import redis
from redis.crc import key_slot

import wq_redis as wq
from wq_redis.client.stats import stats_from_snapshot
from wq_redis.client.task import PythonTask, PythonTaskNoResult, Task
from wq_redis.client.wire import apply_results, encode_task
from wq_redis.protocol import keys as keymod
from wq_redis.protocol import serialize
from wq_redis.protocol.keys import QueueKeys, check_queue_name, padded_id
from wq_redis.protocol.resources import (
    Request,
    ResourceClass,
    allocation_of,
    category_hex,
    class_name,
    given,
    parse_class,
    parse_resource_class,
    queue_member,
    split_member,
)
from wq_redis.protocol.serialize import EnvelopeError, FunctionCache, pack_spec, task_spec, unpack_spec
from wq_redis.protocol.store import Snapshot
from wq_redis.worker import resources as worker_resources
from wq_redis.worker.resources import GPU, Allocator, Capacity, declared

# ======================================================================================
# resources.py: Request, resource classes, queue members
# ======================================================================================


def test_request_defaults_to_nothing():
    assert Request() == Request(cores=0, memory=0, disk=0, gpus=0)


@pytest.mark.parametrize("field", ["cores", "memory", "disk", "gpus"])
def test_request_rejects_a_negative_value(field):
    with pytest.raises(ValueError, match=field):
        Request(**{field: -1})


@pytest.mark.parametrize("field", ["cores", "memory", "disk", "gpus"])
def test_request_rejects_a_bool(field):
    with pytest.raises(ValueError, match=field):
        Request(**{field: True})


@pytest.mark.parametrize("field", ["cores", "memory", "disk", "gpus"])
def test_request_rejects_a_float(field):
    with pytest.raises(ValueError, match=field):
        Request(**{field: 2.0})


def test_request_rejects_a_string():
    with pytest.raises(ValueError):
        Request(cores="2")  # type: ignore[arg-type]


def test_request_fits_free_resources_given_as_a_dict():
    free = {"cores": 4, "memory": 1024, "disk": 0, "gpus": 1}
    assert Request(4, 1024, 0, 1).fits(free)
    assert not Request(4, 1025, 0, 1).fits(free)
    assert not Request(1, 0, 0, 2).fits(free)


def test_class_name_spells_what_was_declared_exactly():
    # no rounding: the worker computes what the task is given from these (claim.lua)
    assert class_name(Request(2, 1000, 3000, 0)) == "c2.m1000.d3000.g0"
    assert ResourceClass().name == "c-1"
    assert ResourceClass((1, -1, -1, -1)).name == "c1"
    assert ResourceClass((-1, -1, 4000, -1)).name == "c-1.d4000"


def test_the_full_spelling_of_unset_resources_still_parses():
    # queues written before unset resources were left out of class names
    assert parse_resource_class("c-1.m-1.d-1.g-1") == ResourceClass()
    assert parse_resource_class("c2.m-1.d-1.g1.p01") == ResourceClass((2, -1, -1, 1), proportional=False)


def test_class_name_adds_the_minimum_the_flags_and_the_category_only_when_set():
    full = ResourceClass((-1, 1000, -1, -1), (3, -1, -1, 2), False, True, category_hex("big"))
    assert full.name == "c-1.m1000.n3.-1.-1.2.p01.k626967"
    assert ResourceClass((1, 2, 3, 4), whole_tasks=False).name == "c1.m2.d3.g4.p10"
    assert replace(full, at_max=True).name.endswith(".K626967")


@pytest.mark.parametrize(
    "resource_class",
    [
        ResourceClass(),
        ResourceClass((4, 0, 0, 1)),
        ResourceClass((2, 1000, 3000, 0), (1, 1, 1, 1)),
        ResourceClass((-1, -1, 5, -1), proportional=False, whole_tasks=False),
        ResourceClass((64, 300_000, 1, 8), category=category_hex("ünïcode|cat"), at_max=True),
    ],
)
def test_parse_resource_class_inverts_its_name(resource_class):
    assert parse_resource_class(resource_class.name) == resource_class


@pytest.mark.parametrize(
    "name",
    [
        "",
        "c4.d0.m0",  # out of order
        "c4.m0.m0",
        "c4.m0.d0.g1.x",
        "x4.m0.d0.g1",
        "c-2.m0.d0.g0",
        "c4.m0.d0.g1|tag",
        "c1.m1.d1.g1.kXY",
        "c1.m1.d1.g1.p2",
    ],
)
def test_parse_class_rejects_a_malformed_name(name):
    with pytest.raises(ValueError):
        parse_class(name)


def test_a_class_refuses_values_below_unset():
    with pytest.raises(ValueError):
        ResourceClass((-2, 0, 0, 0))


def test_nominal_is_the_least_any_worker_gives():
    assert parse_class("c-1") == Request(1, 0, 0, 0)  # the whole worker: at least a core
    assert parse_class("c-1.g2") == Request(0, 0, 0, 2)  # a GPU task that declared no cores
    assert parse_class("c1.m100.d-1.g-1.n3.-1.200.-1") == Request(3, 100, 200, 0)  # never below the minimum


def test_allocation_of_reads_the_box_the_claim_wrote():
    assert allocation_of(b"2 500 1000 0") == Request(2, 500, 1000, 0)
    for garbage in (None, b"", b"1 2 3", b"a b c d", b"-1 0 0 0", b"\xff\xfe", "1 2 3 4 5"):
        assert allocation_of(garbage) is None
    assert given("c1|", b"1 250 250 0") == Request(1, 250, 250, 0)
    assert given("c1|", b"garbage") == Request(1, 0, 0, 0)  # then what its class needs at least


def test_queue_member_joins_class_and_tag_with_a_bar():
    assert queue_member(Request(2, 0, 0, 0), "hydrazine") == "c2.m0.d0.g0|hydrazine"


def test_queue_member_of_an_untagged_task_has_an_empty_tag():
    member = queue_member(ResourceClass((1, -1, -1, -1)), None)
    assert member == "c1|"
    assert split_member(member) == ("c1", "")


def test_split_member_keeps_bars_inside_the_tag():
    member = queue_member(Request(1, 300, 0, 0), "a|b||c")
    assert split_member(member) == ("c1.m300.d0.g0", "a|b||c")


def test_split_member_inverts_queue_member():
    for tag in ["", "x", "with space", "a|b", "|lead", "trail|", "ünïcode"]:
        request_ = Request(3, 1000, 0, 1)
        assert split_member(queue_member(request_, tag)) == (class_name(request_), tag)


# ======================================================================================
# keys.py: the key schema
# ======================================================================================

NAME = "proj-1"
# every public name of QueueKeys, with the argument a method takes (None: a property)
KEY_NAMES = {
    "prefix": None,
    "seq": None,
    "stats": None,
    "registry": None,
    "leases": None,
    "done": None,
    "done_wake": None,
    "retrieving": None,
    "incarnation": None,
    "new_queue_wake": None,
    "workers": None,
    "reaper_lock": None,
    "task": 42,
    "ready": "c1.m0.d0.g0|tag",
    "wake": "c1.m0.d0.g0|tag",
    "worker": "7@host",
    "worker_wake": "7@host",
    "control": "7@host",
    "function": "ab" * 32,
    "categories": None,
    "blocked_hosts": None,
    "file": "cd" * 32,
    "fifo": "c1.m0.d0.g0|tag",
    "value": "w@h#1:42:1",
    "big_field": (42, "args"),
    "label": "626967",
    "shards": None,
}


def _key(k: QueueKeys, name: str) -> str:
    arg = KEY_NAMES[name]
    value = getattr(k, name)
    if arg is None:
        return value
    return value(*arg) if isinstance(arg, tuple) else value(arg)


def test_key_names_list_every_public_member_of_queue_keys():
    public = {n for n in dir(QueueKeys) if not n.startswith("_")} - {"name", "part"}
    assert public == set(KEY_NAMES)


@pytest.mark.parametrize("name", sorted(KEY_NAMES))
def test_every_key_starts_with_the_hash_tagged_prefix(name):
    assert _key(QueueKeys(NAME), name).startswith("wq:{proj-1}:")


@pytest.mark.parametrize("name", sorted(KEY_NAMES))
def test_every_key_of_a_queue_hashes_to_the_queue_slot(name):
    assert key_slot(_key(QueueKeys(NAME), name).encode()) == key_slot(b"{proj-1}")


def test_keys_of_different_queues_do_not_collide():
    a, b = QueueKeys("a"), QueueKeys("b")
    assert not {_key(a, n) for n in KEY_NAMES} & {_key(b, n) for n in KEY_NAMES}


def test_distinct_keys_of_one_queue_are_distinct():
    k = QueueKeys(NAME)
    values = [_key(k, n) for n in KEY_NAMES if n != "prefix"]
    assert len(values) == len(set(values))


def test_task_ready_and_wake_keys_follow_the_suffixes_lua_rebuilds():
    k = QueueKeys(NAME)
    assert k.task(42) == k.prefix + keymod.TASK + "42"
    assert k.task("42") == k.task(42)
    assert k.ready("c1.m0.d0.g0|") == k.prefix + keymod.READY + "c1.m0.d0.g0|"
    assert k.wake("c1.m0.d0.g0|") == k.prefix + keymod.WAKE + "c1.m0.d0.g0|"
    assert k.worker("w") == k.prefix + "w:w"


def test_check_queue_name_accepts_ordinary_names():
    for name in ["default", "proj-1", "a.b_c", "Ünïcode", "x:y"]:
        assert check_queue_name(name) == name


@pytest.mark.parametrize("name", ["{x}", "a{", "b}", "a|b", "a b", "a\tb", "a\nb", "a\rb", " "])
def test_check_queue_name_rejects_braces_bars_and_whitespace(name):
    with pytest.raises(ValueError):
        check_queue_name(name)


def test_check_queue_name_rejects_an_empty_name():
    with pytest.raises(ValueError):
        check_queue_name("")


def test_check_queue_name_rejects_a_non_string():
    with pytest.raises(ValueError):
        check_queue_name(123)  # type: ignore[arg-type]


def test_queue_keys_refuse_a_bad_queue_name():
    with pytest.raises(ValueError):
        QueueKeys("a{b}")


def test_padded_ids_sort_lexicographically_like_numbers():
    ids = [0, 1, 2, 9, 10, 11, 99, 100, 101, 999, 1000, 123_456, 99_999_999_999, 999_999_999_999]
    assert sorted(padded_id(i) for i in ids) == [padded_id(i) for i in sorted(ids)]


def test_padded_id_has_the_schema_width():
    assert padded_id(7) == "000000000007"
    assert len(padded_id(7)) == keymod.ID_WIDTH


# ======================================================================================
# serialize.py: spec envelopes
# ======================================================================================


def test_pack_unpack_round_trip():
    spec = {
        "kind": "cmd",
        "command": "echo hi",
        "env": {"A": "1", "B": None},
        "inputs": [["x", "y"]],
        "priority": -1.5,
        "unicode": "ü",
    }
    assert unpack_spec(pack_spec(spec)) == spec


def test_pack_spec_starts_with_magic_and_version():
    data = pack_spec({"kind": "py"})
    assert data[:2] == serialize.MAGIC and data[2] == serialize.VERSION


@pytest.mark.parametrize("data", [None, b""])
def test_unpack_spec_of_nothing_says_it_is_missing(data):
    with pytest.raises(EnvelopeError, match="missing or not a wq-redis envelope"):
        unpack_spec(data)


@pytest.mark.parametrize("data", [b"\x80\x04\x95", b'{"kind":"cmd"}', b"WQ", b"XY\x01{}"])
def test_unpack_spec_of_foreign_bytes_says_it_is_not_an_envelope(data):
    with pytest.raises(EnvelopeError, match="not a wq-redis envelope"):
        unpack_spec(data)


def test_unpack_spec_of_a_newer_version_names_both_versions():
    data = serialize.MAGIC + bytes([serialize.VERSION + 1]) + b'{"kind":"cmd"}'
    with pytest.raises(EnvelopeError, match=f"version {serialize.VERSION + 1}, this worker reads {serialize.VERSION}"):
        unpack_spec(data)


def test_unpack_spec_of_truncated_json_says_truncated():
    data = pack_spec({"kind": "cmd", "command": "echo hello"})
    with pytest.raises(EnvelopeError, match="truncated or corrupt"):
        unpack_spec(data[:-5])


def test_unpack_spec_of_json_without_kind_says_so():
    with pytest.raises(EnvelopeError, match="no 'kind'"):
        unpack_spec(pack_spec({"command": "true"}))


def test_unpack_spec_of_a_json_list_says_no_kind():
    with pytest.raises(EnvelopeError, match="no 'kind'"):
        unpack_spec(serialize.MAGIC + bytes([serialize.VERSION]) + b'["kind"]')


def test_envelope_error_is_a_value_error_exported_by_the_package():
    assert issubclass(wq.EnvelopeError, ValueError)
    assert wq.EnvelopeError is EnvelopeError


@pytest.mark.parametrize("args", [(), (1, "a", b"b", None, 2.5), ([1, 2], {"k": (3, "v")})])
def test_built_in_arguments_pickle_to_the_bytes_cloudpickle_writes(args):
    """The worker's default arguments and the manager's fast path for built-in data use the
    standard pickler (the worker's main process never loads cloudpickle): the bytes must be
    those cloudpickle writes, or equal calls would hash and compare differently."""
    assert serialize.NO_ARGS == cloudpickle.dumps(((), {}))
    assert serialize.pickle_arguments(args, {"n": 1}) == cloudpickle.dumps((args, {"n": 1}))


# ======================================================================================
# serialize.py: FunctionCache
# ======================================================================================


@pytest.fixture
def dumps_calls(monkeypatch):
    """Count cloudpickle.dumps calls made by the function cache."""
    calls = []
    real = cloudpickle.dumps

    def spy(obj, *args, **kwargs):
        calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(cloudpickle, "dumps", spy)
    return calls


def _square(x):
    return x * x


def test_function_cache_pickles_a_function_once(dumps_calls):
    cache = FunctionCache()
    first, second = cache.get(_square), cache.get(_square)
    assert len(dumps_calls) == 1
    assert first[0] == second[0]
    assert first[1] is second[1]


def test_function_cache_repickles_a_callable_object_whose_state_changed():
    class Scale:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return self.k * x

    cache = FunctionCache()
    scale = Scale(1)
    before = cache.get(scale)
    scale.k = 10
    after = cache.get(scale)
    assert before[0] != after[0]
    assert cloudpickle.loads(after[1])(2) == 20


def test_function_cache_repickles_a_closure_whose_cell_changed():
    box = [1]

    def read():
        return box[0]

    cache = FunctionCache()
    before = cache.get(read)
    box[0] = 2
    assert cloudpickle.loads(cache.get(read)[1])() == 2
    assert before[0] != cache.get(read)[0]


def test_function_cache_names_a_function_by_the_sha256_of_its_pickle():
    import hashlib

    digest, body = FunctionCache().get(_square)
    assert digest == hashlib.sha256(body).hexdigest()
    assert cloudpickle.loads(body)(7) == 49


def test_function_cache_gives_different_functions_different_digests():
    cache = FunctionCache()
    assert cache.get(_square)[0] != cache.get(lambda x: x + 1)[0]


def test_function_cache_handles_lambdas_and_closures():
    cache = FunctionCache()
    offset = 10
    add = lambda x: x + offset  # noqa: E731
    digest, body = cache.get(add)
    assert cloudpickle.loads(body)(1) == 11
    assert cache.get(add)[0] == digest


def test_function_cache_digests_closures_over_different_values_differently():
    def make(n):
        return lambda x: x + n

    cache = FunctionCache()
    assert cache.get(make(1))[0] != cache.get(make(2))[0]


def test_function_cache_accepts_a_callable_that_cannot_be_weakly_referenced(dumps_calls):
    import weakref

    with pytest.raises(TypeError):
        weakref.ref(str.upper)  # a method descriptor: the cache cannot key it
    cache = FunctionCache()
    digest, body = cache.get(str.upper)
    assert cache.get(str.upper)[0] == digest
    assert cloudpickle.loads(body)("a") == "A"


def test_function_cache_accepts_builtins_and_partials():
    import functools

    cache = FunctionCache()
    assert cloudpickle.loads(cache.get(len)[1])([1, 2]) == 2
    assert cloudpickle.loads(cache.get(functools.partial(max, 5))[1])(3) == 5


def test_function_cache_accepts_an_unhashable_callable():
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, x):
            return -x

    _, body = FunctionCache().get(Unhashable())
    assert cloudpickle.loads(body)(3) == -3


# ======================================================================================
# task.py: Task and PythonTask
# ======================================================================================

RESOURCE_SETTERS = ["specify_cores", "specify_memory", "specify_disk", "specify_gpus", "specify_max_retries"]


@pytest.mark.parametrize("setter", RESOURCE_SETTERS)
def test_specify_a_negative_amount_raises_value_error(setter):
    with pytest.raises(ValueError):
        getattr(Task("true"), setter)(-1)


@pytest.mark.parametrize("setter", RESOURCE_SETTERS)
@pytest.mark.parametrize("value", ["four", None, object()])
def test_specify_a_non_number_raises_type_error(setter, value):
    with pytest.raises(TypeError):
        getattr(Task("true"), setter)(value)


@pytest.mark.parametrize("setter", RESOURCE_SETTERS)
def test_specify_a_fractional_amount_is_refused(setter):
    with pytest.raises((TypeError, ValueError)):
        getattr(Task("true"), setter)(1.5)


def test_specify_resources_are_reported_as_requested():
    t = Task("true")
    t.specify_cores(4)
    t.specify_memory(1000)
    t.specify_disk(0)
    t.specify_gpus(1)
    r = t.resources_requested
    assert (r.cores, r.memory, r.disk, r.gpus) == (4, 1000, 0, 1)


def test_undeclared_resources_are_none_in_resources_requested():
    r = Task("true").resources_requested
    assert (r.cores, r.memory, r.disk, r.gpus) == (None, None, None, None)


@pytest.mark.parametrize("remote", ["../x", "/etc/passwd", "a/../../x", "..", "./../x"])
def test_an_input_file_whose_remote_name_leaves_the_sandbox_is_rejected(remote):
    with pytest.raises(ValueError, match="sandbox"):
        Task("true").specify_input_file("x", remote)


@pytest.mark.parametrize("remote", ["../x", "/etc/passwd", "a/../../x"])
def test_an_output_file_whose_remote_name_leaves_the_sandbox_is_rejected(remote):
    with pytest.raises(ValueError, match="sandbox"):
        Task("true").specify_output_file("x", remote)


@pytest.mark.parametrize("remote", ["../x", "/etc/passwd"])
def test_a_buffer_whose_remote_name_leaves_the_sandbox_is_rejected(remote):
    with pytest.raises(ValueError, match="sandbox"):
        Task("true").specify_buffer(b"data", remote)


def test_a_local_path_without_remote_name_lands_under_its_base_name():
    t = Task("true")
    t.specify_output_file("/some/where/result.txt")
    t.specify_buffer("hello", "sub/dir/../in.txt")
    fields, _ = encode_task(t, FunctionCache())
    spec = unpack_spec(fields["spec"])
    assert spec["outputs"] == [["/some/where/result.txt", "result.txt"]]
    assert fields["in:sub/in.txt"] == b"hello"


def _encoded_spec(task: Task) -> dict:
    """The spec as the worker reads it (a PythonTask that specifies nothing has no spec field)."""
    fields, _ = encode_task(task, FunctionCache())
    return task_spec({name.encode(): value for name, value in fields.items()})


def test_specify_environment_variable_without_value_records_an_unset():
    t = Task("true")
    t.specify_environment_variable("HOME")
    assert _encoded_spec(t)["env"] == {"HOME": None}


def test_specify_environment_variable_with_value_records_it_as_text():
    t = Task("true")
    t.specify_environment_variable("N", 3)  # type: ignore[arg-type]
    assert _encoded_spec(t)["env"] == {"N": "3"}


def test_python_task_rejects_a_non_callable():
    with pytest.raises(TypeError, match="callable"):
        PythonTask(42)


def test_python_task_envelope_names_its_function_by_digest():
    t = PythonTask(_square, 3)
    fields, bodies = encode_task(t, FunctionCache())
    assert _encoded_spec(t)["kind"] == "py"
    assert set(bodies) == {fields["fn"].hex()}  # the raw digest in the hash
    assert cloudpickle.loads(fields["args"]) == ((3,), {})


RESULT_PROPERTIES = [
    "id",
    "result",
    "result_str",
    "return_status",
    "std_output",
    "error",
    "hostname",
    "worker",
    "execute_cmd_start",
    "finish_time",
    "cmd_execution_time",
]


@pytest.mark.parametrize("prop", RESULT_PROPERTIES)
def test_result_properties_are_none_before_a_result(prop):
    assert getattr(Task("true"), prop) is None


def test_a_task_without_result_has_no_submissions_and_no_output_files():
    t = Task("true")
    assert t.total_submissions == 0
    assert t.output_files == {}
    assert t.output is None


def test_python_task_output_before_completion_is_a_no_result_marker():
    assert isinstance(PythonTask(_square, 2).output, PythonTaskNoResult)


def test_python_task_output_is_the_unpickled_return_value():
    t = PythonTask(_square, 3)
    apply_results(t, 5, {b"r": b"0", b"rs": b"0", b"val": cloudpickle.dumps(9), b"out": b""})
    assert t.output == 9 and t.id == 5


def test_python_task_output_is_the_exception_the_function_raised():
    t = PythonTask(_square, "x")
    apply_results(t, 5, {b"r": b"0", b"rs": b"1", b"val": cloudpickle.dumps(TypeError("boom"))})
    assert isinstance(t.output, TypeError) and str(t.output) == "boom"


def test_python_task_output_of_a_failed_task_is_no_result_with_the_reason():
    t = PythonTask(_square, 3)
    apply_results(t, 5, {b"r": b"48", b"err": b"retries exhausted"})
    assert isinstance(t.output, PythonTaskNoResult)
    assert "retries exhausted" in str(t.output)


def test_task_result_fields_are_decoded():
    t = Task("echo hi")
    apply_results(
        t,
        3,
        {
            b"r": b"0",
            b"rs": b"2",
            b"out": b"hi\n",
            b"host": b"h1",
            b"a": b"2",
            b"ts": b"1000000",
            b"tf": b"3500000",
            b"o:out.txt": b"data",
        },
    )
    assert t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.result_str == "SUCCESS"
    assert (t.return_status, t.output, t.std_output, t.hostname) == (2, "hi\n", "hi\n", "h1")
    assert t.total_submissions == 2
    assert t.cmd_execution_time == 2_500_000
    assert t.output_files == {"out.txt": b"data"}


def test_result_fields_a_worker_leaves_out_are_derived():
    t = Task("true")
    fields = {
        b"r": b"0",
        b"w": b"7@node-3",
        b"q": b"c2.g1|tag",
        b"alloc": b"2 384 0 1",
        b"meas": b'{"cores":0.5}',
    }
    apply_results(t, 4, fields)
    assert (t.return_status, t.std_output, t.hostname) == (0, "", "node-3")
    allocated = t.resources_allocated  # what the claim gave it ("alloc"), not what it declared
    assert (allocated.cores, allocated.memory, allocated.disk, allocated.gpus) == (2, 384, 0, 1)
    waiting = Task("true")
    assert (waiting.return_status, waiting.std_output, waiting.hostname) == (None, None, None)


@pytest.mark.parametrize(
    "code, name",
    [
        (0, "SUCCESS"),
        (1, "INPUT_MISS"),
        (2, "OUTPUT_MISS"),
        (8, "SIGNAL"),
        (24, "END_TIME"),
        (48, "MAX_RETRIES"),
        (56, "MAX_WALL_TIME"),
        (64, "DISK_FULL"),
        (80, "OUTPUT_TRANSFER_ERROR"),
    ],
)
def test_result_str_names_the_result_code(code, name):
    t = Task("true")
    apply_results(t, 1, {b"r": str(code).encode()})
    assert t.result_str == name
    assert wq.result_str(code) == name


def test_result_str_of_no_result_is_none():
    assert wq.result_str(None) is None


def test_result_str_of_an_unknown_code_is_unknown():
    assert wq.result_str(12345) == "UNKNOWN"


# ======================================================================================
# codes.py: Work Queue's names and values
# ======================================================================================

RESULT_CODES = {
    "SUCCESS": 0,
    "INPUT_MISSING": 1,
    "OUTPUT_MISSING": 2,
    "STDOUT_MISSING": 4,
    "SIGNAL": 8,
    "RESOURCE_EXHAUSTION": 16,
    "TASK_TIMEOUT": 24,
    "UNKNOWN": 32,
    "FORSAKEN": 40,
    "MAX_RETRIES": 48,
    "TASK_MAX_RUN_TIME": 56,
    "DISK_ALLOC_FULL": 64,
    "RMONITOR_ERROR": 72,
    "OUTPUT_TRANSFER_ERROR": 80,
}
TASK_STATES = {"UNKNOWN": 0, "READY": 1, "RUNNING": 2, "WAITING_RETRIEVAL": 3, "RETRIEVED": 4, "DONE": 5, "CANCELED": 6}


@pytest.mark.parametrize("name, value", sorted(RESULT_CODES.items()))
def test_result_code_is_exported_with_work_queue_name_and_value(name, value):
    exported = getattr(wq, f"WORK_QUEUE_RESULT_{name}")
    assert exported == value
    assert wq.Result[name] == value
    assert f"WORK_QUEUE_RESULT_{name}" in wq.__all__


@pytest.mark.parametrize("name, value", sorted(TASK_STATES.items()))
def test_task_state_is_exported_with_work_queue_name_and_value(name, value):
    assert getattr(wq, f"WORK_QUEUE_TASK_{name}") == value
    assert wq.TaskState[name] == value
    assert f"WORK_QUEUE_TASK_{name}" in wq.__all__


def test_there_are_no_result_codes_beyond_work_queue_s():
    assert {r.name: r.value for r in wq.Result} == RESULT_CODES


def test_there_are_no_task_states_beyond_work_queue_s():
    assert {s.name: s.value for s in wq.TaskState} == TASK_STATES


def test_max_retries_is_48():
    assert wq.WORK_QUEUE_RESULT_MAX_RETRIES == 48


def test_wait_forever_is_minus_one():
    assert wq.WORK_QUEUE_WAITFORTASK == -1


# ======================================================================================
# worker/resources.py: Allocator
# ======================================================================================


def _allocator(cores=4, memory=0, disk=0, gpus=()):
    return Allocator(Capacity(cores, memory, disk, list(gpus)))


def test_allocator_takes_one_core_tasks_up_to_its_cores():
    a = _allocator(cores=4)
    for task_id in range(4):
        a.allocate(task_id, Request(1))
    assert a.free()["cores"] == 0


def test_allocator_refuses_a_task_beyond_its_cores():
    a = _allocator(cores=4)
    for task_id in range(4):
        a.allocate(task_id, Request(1))
    with pytest.raises(RuntimeError):
        a.allocate(4, Request(1))


def test_allocator_fits_a_three_core_and_a_one_core_task_in_four_cores():
    a = _allocator(cores=4)
    a.allocate(1, Request(3))
    a.allocate(2, Request(1))
    assert a.in_use()["cores"] == 4


def test_allocator_refuses_a_second_three_core_task_in_four_cores():
    a = _allocator(cores=4)
    a.allocate(1, Request(3))
    with pytest.raises(RuntimeError):
        a.allocate(2, Request(3))


def test_a_refused_allocation_leaves_the_books_unchanged():
    a = _allocator(cores=4)
    a.allocate(1, Request(3))
    before = a.free()
    with pytest.raises(RuntimeError):
        a.allocate(2, Request(3))
    assert a.free() == before


def test_allocator_never_over_commits_memory():
    a = _allocator(cores=8, memory=1024)
    a.allocate(1, Request(1, 768))
    with pytest.raises(RuntimeError):
        a.allocate(2, Request(1, 512))
    a.allocate(3, Request(1, 256))
    assert a.free()["memory"] == 0


def test_allocator_frees_resources_on_release():
    a = _allocator(cores=4)
    a.allocate(1, Request(3))
    a.release(1)
    a.allocate(2, Request(3))
    assert a.free() == {"cores": 1, "memory": 0, "disk": 0, "gpus": 0}


def test_releasing_an_unknown_task_is_a_no_op():
    a = _allocator(cores=4)
    a.release(99)
    assert a.free()["cores"] == 4


GPUS = [GPU(0, "GPU-aaa"), GPU(1, "GPU-bbb")]


def test_allocator_hands_out_distinct_gpus():
    a = _allocator(cores=8, gpus=GPUS)
    first, second = a.allocate(1, Request(1, 0, 0, 1)), a.allocate(2, Request(1, 0, 0, 1))
    assert len(first) == len(second) == 1
    assert {first[0].uuid, second[0].uuid} == {"GPU-aaa", "GPU-bbb"}


def test_allocator_refuses_a_gpu_task_when_all_gpus_are_held():
    a = _allocator(cores=8, gpus=GPUS)
    a.allocate(1, Request(1, 0, 0, 2))
    with pytest.raises(RuntimeError):
        a.allocate(2, Request(1, 0, 0, 1))


def test_allocator_returns_gpus_on_release():
    a = _allocator(cores=8, gpus=GPUS)
    held = a.allocate(1, Request(1, 0, 0, 1))
    a.allocate(2, Request(1, 0, 0, 1))
    a.release(1)
    assert a.allocate(3, Request(1, 0, 0, 1)) == held


def test_a_task_without_gpus_gets_none():
    assert _allocator(cores=8, gpus=GPUS).allocate(1, Request(2)) == []


def test_a_second_allocation_for_a_task_id_that_still_holds_resources_is_not_lost():
    a = _allocator(cores=4, gpus=GPUS)
    a.allocate(5, Request(1, 0, 0, 1))
    try:
        a.allocate(5, Request(1, 0, 0, 1))
    except RuntimeError:
        return  # refusing is a correct answer too
    assert a.in_use() == {"cores": 2, "memory": 0, "disk": 0, "gpus": 2}


# ======================================================================================
# worker/resources.py: declared capacity and the GPU pool
# ======================================================================================


@pytest.fixture
def detected(monkeypatch):
    """Pretend the host has 4 cores, 8000 MB of memory, 50000 MB of disk and no GPUs."""
    found = Capacity(4, 8000, 50000, [])
    monkeypatch.setattr(worker_resources, "detect", lambda workdir, gpus=True: found)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return found


def test_declared_takes_detected_values_when_nothing_is_declared(detected, tmp_path):
    c = declared(str(tmp_path), None, None, None, None)
    assert c.as_dict() == {"cores": 4, "memory": 8000, "disk": 50000, "gpus": 0}


def test_declared_values_win_over_detected_ones(detected, tmp_path):
    c = declared(str(tmp_path), 2, 1000, 500, None)
    assert (c.cores, c.memory, c.disk) == (2, 1000, 500)


@pytest.mark.parametrize(
    "option, args", [("cores", (16, None, None)), ("memory", (None, 9000, None)), ("disk", (None, None, 60000))]
)
def test_declaring_more_than_detected_is_taken_with_a_warning(detected, tmp_path, caplog, option, args):
    with caplog.at_level(logging.WARNING, logger="wq_redis.worker"):
        c = declared(str(tmp_path), *args, None)
    assert getattr(c, option) == max(a for a in args if a is not None)
    assert any(f"--{option}" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_declaring_less_than_detected_logs_no_warning(detected, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="wq_redis.worker"):
        declared(str(tmp_path), 2, 1000, 500, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_declaring_more_gpus_than_detected_adds_them_with_a_warning(detected, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="wq_redis.worker"):
        c = declared(str(tmp_path), None, None, None, 2)
    assert [g.device_id for g in c.gpus] == ["0", "1"]
    assert any("--gpus" in r.getMessage() for r in caplog.records)


def test_a_worker_needs_at_least_one_core(detected, tmp_path):
    with pytest.raises(ValueError):
        declared(str(tmp_path), 0, None, None, None)


def test_cuda_visible_devices_indices_define_the_gpu_pool(detected, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    c = declared(str(tmp_path), None, None, None, None)
    assert [g.device_id for g in c.gpus] == ["1", "3"]
    assert c.as_dict()["gpus"] == 2


def test_cuda_visible_devices_uuids_define_the_gpu_pool(detected, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa, GPU-bbb")
    c = declared(str(tmp_path), None, None, None, None)
    assert [g.device_id for g in c.gpus] == ["GPU-aaa", "GPU-bbb"]


def test_cuda_visible_devices_wins_over_detected_gpus(monkeypatch, tmp_path):
    monkeypatch.setattr(worker_resources, "detect", lambda workdir, gpus=True: Capacity(4, 8000, 50000, list(GPUS)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    c = declared(str(tmp_path), None, None, None, None)
    assert [g.device_id for g in c.gpus] == ["1"]


def test_declared_gpus_take_the_first_of_the_visible_ones(detected, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    c = declared(str(tmp_path), None, None, None, 2)
    assert [g.device_id for g in c.gpus] == ["2", "5"]


def test_an_empty_cuda_visible_devices_means_no_gpus(detected, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert declared(str(tmp_path), None, None, None, None).gpus == []


def test_cuda_visible_devices_minus_one_means_no_gpus(detected, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert declared(str(tmp_path), None, None, None, None).gpus == []


# ======================================================================================
# stats.py: stats_from_snapshot
# ======================================================================================


def _worker_record(cores, memory, disk, gpus):
    return {
        b"name": b"w",
        b"resources": json.dumps({"cores": cores, "memory": memory, "disk": disk, "gpus": gpus}).encode(),
    }


@pytest.fixture
def snapshot():
    return Snapshot(
        waiting={"c1.m0.d0.g0|": 3, "c2.m1024.d0.g1|gpu": 2, "c4.m0.d0.g0|empty": 0},
        running=3,
        with_results=4,
        counters={
            "submitted": 20,
            "dispatched": 11,
            "retrieved": 6,
            "failed": 2,
            "canceled": 1,
            "requeued": 5,
            "late_results": 1,
            "workers_lost": 2,
        },
        workers={
            "a@h": _worker_record(8, 16000, 100000, 2),
            "b@h": _worker_record(4, 8000, 50000, 0),
            "c@h": _worker_record(2, 4000, 0, 0),
        },
        running_tasks=[("a@h", "c2.m1024.d0.g1|gpu"), ("a@h", "c-1|"), ("b@h", "c1.m384.d512.g0|x")],
        running_given=[Request(2, 1024, 0, 1), Request(8, 0, 0, 0), Request(1, 384, 512, 0)],
    )


def test_stats_count_a_worker_holding_a_lease_as_busy_and_the_others_as_idle(snapshot):
    s = stats_from_snapshot(snapshot)
    assert (s.workers_connected, s.workers_busy, s.workers_idle) == (3, 2, 1)


def test_stats_total_resources_sum_the_worker_records(snapshot):
    s = stats_from_snapshot(snapshot)
    assert (s.total_cores, s.total_memory, s.total_disk, s.total_gpus) == (14, 28000, 150000, 2)


def test_stats_committed_resources_sum_what_running_tasks_were_given(snapshot):
    s = stats_from_snapshot(snapshot)  # (the second declared nothing: it was given its worker's 8 cores)
    assert (s.committed_cores, s.committed_memory, s.committed_disk, s.committed_gpus) == (11, 1408, 512, 1)


def test_stats_task_counts_come_from_queues_leases_done_list_and_counters(snapshot):
    s = stats_from_snapshot(snapshot)
    assert s.tasks_waiting == 5
    assert s.tasks_running == s.tasks_on_workers == 3
    assert s.tasks_with_results == 4
    assert (s.tasks_submitted, s.tasks_dispatched, s.tasks_done, s.tasks_failed, s.tasks_cancelled) == (20, 11, 6, 2, 1)
    assert (s.tasks_requeued, s.tasks_late_results, s.workers_lost) == (5, 1, 2)


def test_stats_outstanding_is_submitted_minus_done_minus_cancelled(snapshot):
    assert stats_from_snapshot(snapshot).tasks_outstanding == 13


def test_stats_list_only_queues_that_hold_tasks(snapshot):
    assert stats_from_snapshot(snapshot).waiting_by_queue == {"c1.m0.d0.g0|": 3, "c2.m1024.d0.g1|gpu": 2}


def test_stats_capacity_is_one_task_per_core(snapshot):
    s = stats_from_snapshot(snapshot)
    assert s.capacity_cores == s.capacity_tasks == 14


def test_stats_of_an_empty_queue_are_zero():
    s = stats_from_snapshot(Snapshot({}, 0, 0, {}, {}, []))
    assert s == wq.Stats()


def test_stats_of_a_worker_record_without_resources_count_it_with_none():
    s = stats_from_snapshot(Snapshot({}, 0, 0, {}, {"x@h": {b"status": b"{}"}}, []))
    assert (s.workers_connected, s.workers_idle, s.total_cores) == (1, 1, 0)


# ======================================================================================
# worker/runner.py + pool.py: warm children keep functions by digest (one child, no Redis)
# ======================================================================================


def test_a_warm_child_runs_a_function_again_after_running_many_others(tmp_path):
    from wq_redis.protocol.serialize import pickle_arguments
    from wq_redis.worker.child.process import MAX_CACHED_FUNCTIONS
    from wq_redis.worker.pool import WarmPool
    from wq_redis.worker.runner import Slot, TaskRun

    def make(n):
        return lambda x: x + n

    cache, bodies = FunctionCache(), {}
    digests = []
    for n in range(MAX_CACHED_FUNCTIONS + 2):
        digest, body = cache.get(make(n))
        bodies[digest] = body
        digests.append(digest)
    pool = WarmPool(max_idle=1, hide_gpus=False)
    spec = pack_spec({"kind": "py", "command": "python:f"})
    try:
        for task_id, digest in enumerate(digests + digests[:1]):
            fields = {b"spec": spec, b"fn": digest.encode(), b"args": pickle_arguments((1,), {}), b"a": b"1"}
            run = TaskRun(task_id, fields, Slot(Request(), [], str(tmp_path), pool, bodies.get, 1 << 20))
            result = run.execute()
            assert result is not None and result["r"] == 0, (task_id, result and result.get("err"))
    finally:
        pool.close()


def test_a_warm_child_batch_finds_its_cached_functions_while_a_new_one_fills_the_cache(tmp_path):
    """A batch whose first call brings a new function to a full cache, and whose last one
    uses the oldest cached function (sent without its body: the worker knows the child has
    it): loading the new one must not evict the old one while the batch runs."""
    from wq_redis.protocol.codes import Result
    from wq_redis.protocol.serialize import pickle_arguments
    from wq_redis.worker.child.messages import RunBatch
    from wq_redis.worker.child.process import MAX_CACHED_FUNCTIONS
    from wq_redis.worker.pool import WarmPool
    from wq_redis.worker.waiting import CancelSignal

    def make(n):
        return lambda x: x + n

    cache, bodies, digests = FunctionCache(), {}, []
    for n in range(MAX_CACHED_FUNCTIONS + 1):
        digest, body = cache.get(make(n))
        bodies[digest] = body
        digests.append(digest)
    args = pickle_arguments((1,), {})
    pool, cancel = WarmPool(max_idle=1, hide_gpus=False), CancelSignal()
    proc = pool.acquire([])
    try:

        def batch(batch_digests):
            count = len(batch_digests)
            message = RunBatch(
                list(range(count)), batch_digests, [args] * count, [{}] * count, {}, {}, proc.sandbox_in(str(tmp_path))
            )
            outcomes, _ = proc.call_batch(message, cancel.read_fd, bodies.get)
            return [(o.result, o.return_status, o.error) for o in outcomes]  # status ok: SUCCESS, 0

        ok = (Result.SUCCESS, 0, "")
        assert batch(digests[:MAX_CACHED_FUNCTIONS]) == [ok] * MAX_CACHED_FUNCTIONS
        assert batch([digests[-1], digests[0]]) == [ok, ok]  # new function first, the oldest cached one last
    finally:
        proc.close()
        cancel.close()
        pool.close()


def test_gcpause_restores_the_collector_as_it_was():
    import gc

    from wq_redis.protocol import gcpause

    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()  # the program's own choice stands
    finally:
        gc.enable()
    with pytest.raises(ZeroDivisionError):
        with gcpause.paused():
            _ = 1 / 0
    assert gc.isenabled()


def test_every_script_has_its_shared_fragments_put_in_and_loads_in_redis(redis_url):
    """``--#include NAME`` lines become scripts/include/NAME.lua; what Redis loads has none left."""
    from wq_redis.protocol.store import QueueStore, script_source

    client = redis.Redis.from_url(redis_url)
    try:
        for name in QueueStore.SCRIPTS:
            source = script_source(name)
            assert "--#include" not in source, name
            client.script_load(source)  # compiles: a fragment that breaks a script fails here
        assert "local function failed(" in script_source("claim")
        assert "local function whole(" in script_source("retrieve")
    finally:
        client.close()


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({b"r": b"0"}, None),
        ({}, "no result code"),
        ({b"r": b"garbage"}, "result code"),
        ({b"r": b"7"}, "result code"),  # not a Work Queue result
        ({b"r": b"0", b"rs": b"1e309"}, "field rs"),
        ({b"r": b"0", b"a": b"-"}, "field a"),
        ({b"r": b"0", b"host": b"\xff"}, "field host"),
        ({b"r": b"0", b"meas": b"[1, 2]", b"alloc": b"\x80"}, None),  # measurements read as unknown instead
    ],
)
def test_a_finished_hash_is_readable_or_says_which_field_is_not(fields, problem):
    from wq_redis.client.wire import unreadable_result

    found = unreadable_result(fields)
    assert found is None if problem is None else problem in found


@pytest.mark.parametrize("data", [b"garbage", b"[1, 2]", b'{"nonsense": 1', b"\x80\x05"])
def test_measured_resources_another_client_garbled_read_as_unknown(data):
    from wq_redis.client.task import Resources

    assert Resources.from_json(data) == Resources()


def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(caplog):
    from wq_redis.protocol.outage import OutageLog

    outage = OutageLog(
        logging.getLogger("wq_redis.test"),
        down="Redis at {address} away ({error})",
        back="Redis at {address} back after {seconds:.0f} s",
        again="{error} again",
        address="redis://h:1/0",
    )
    with caplog.at_level(logging.DEBUG, logger="wq_redis.test"):
        outage.succeeded()  # no outage: nothing to say
        assert outage.failed(error="refused {braces} kept") is True
        assert outage.failed(error="refused") is False
        assert outage.lasted() >= 0.0 and outage.since is not None
        outage.succeeded()
        outage.succeeded()
        assert outage.failed(error="timeout") is True  # a new outage
        outage.forget()  # its caller gave up and said so
        outage.succeeded()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (logging.WARNING, "Redis at redis://h:1/0 away (refused {braces} kept)"),
        (logging.DEBUG, "refused again"),
        (logging.WARNING, "Redis at redis://h:1/0 back after 0 s"),
        (logging.WARNING, "Redis at redis://h:1/0 away (timeout)"),
    ]
    assert outage.since is None and outage.lasted() == 0.0
