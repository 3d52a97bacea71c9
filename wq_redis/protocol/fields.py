"""The field names of a queue's hashes, in one place: a task's hash, a worker's record and
the queue's counters (the stats hash), and the task states the ``s`` field holds.

Names are short on purpose: Redis keeps a small hash as a compact listpack, and a field
name is stored in every task's hash.  The Lua scripts in ``scripts/`` write the same
names as literals; ``tests/test_fields.py`` checks that each one they use is declared
here.  Change one, change both.

Each name has a ``str`` form (what we send: redis-py encodes it on the way out) and, for
the fields Python reads back from a hash, a ``bytes`` form ending in ``_B`` (redis-py
answers with bytes keys): module constants, so that a hot path compares without
encoding anything per call.
"""

from __future__ import annotations

from .codes import TaskState

# -- a task's hash (keys.QueueKeys.task) -------------------------------------------------
# Its place in the queue (written by submit.lua, claim.lua, complete.lua, reap.lua, retrieve.lua)
STATE = "s"  # a TaskState value as decimal text: READY, RUNNING, WAITING_RETRIEVAL, RETRIEVED (see STATE_*)
MEMBER = "q"  # the ready queue "CLASS|TAG" it waits in (resources.queue_member)
SCORE = "p"  # -priority, the score in its ready zset; absent at priority 0 (it waits in the fifo list)
SUBMITTED = "sub"  # submit time in us (manager's clock): also tells a task's own earlier write from a stranger's
STARTED = "ts"  # when its current attempt was claimed, us (Redis time)
FINISHED = "tf"  # when its result was recorded, us (Redis time)
ATTEMPTS = "a"  # attempts so far (claim.lua adds one; release.lua takes one back)
MAX_RETRIES = "mr"  # attempts after which a lost lease fails it with MAX_RETRIES (absent: no limit)
TOKEN = "tok"  # the lease token of the attempt that holds it ("" when none does)
LAST_TOKEN = "lt"  # the token whose result was just recorded (so its renewal is not a lost lease)
WORKER = "w"  # the worker that claimed it last
CATEGORY = "cat"  # its category (absent for "default")
# What the worker runs
SPEC = "spec"  # the envelope (serialize.pack_spec): kind, command, resources, files...; absent: a plain PythonTask
FUNCTION = "fn"  # a PythonTask's function digest (SHA-256, 32 raw bytes; the body is under keys.function)
ARGS = "args"  # a PythonTask's pickled arguments (absent for a call without any)
BIG = "big"  # names of its large fields, "\n"-joined, each a string key beside the hash (keys.big_field)
SIGNATURE = "sig"  # the manager's signature of what the worker unpickles (signing.py)
# Entries of the spec that claim.lua reads from its JSON text, for a worker with an end (--wall-time)
SPEC_RUNNING_TIME_MAX = "running_time_max"  # seconds it may run (Task.specify_running_time_max)
SPEC_RUNNING_TIME_MIN = "running_time_min"  # seconds a worker must have left (specify_running_time_min)
SPEC_END_TIME = "end_time"  # its deadline, us since the epoch (specify_end_time)
# A pack of tasks (packing.py): one hash for many short calls
PACK_SIZE = "n"  # how many members the pack holds (its presence makes the hash a pack)
PACK_CANCELLED = "nc"  # how many of them were cancelled
PACK_ARGS = "pa"  # the members' ids and pickled arguments, one value (packing.dump)
PACK_RESULTS = "pr"  # the members' result fields, one value (packing.dump)
PACK_FAILED = "nf"  # how many members failed
PACK_FAILED_IDS = "fids"  # the failed members' ids, " "-joined
PACK_VALUE_KEYS = "vks"  # keys of members' large return values, "\n"-joined (each like VALUE_KEY)
PACK_CANCELLED_MEMBER = "pc:"  # prefix: "pc:ID" marks member ID cancelled
# Its result (worker/runner.py result_fields; complete.lua)
RESULT = "r"  # the codes.Result code as decimal text
RETURN_STATUS = "rs"  # a command's exit status (absent for 0)
OUTPUT = "out"  # stdout and stderr (absent for none)
ERROR = "err"  # why it failed, for a person
VALUE = "val"  # a PythonTask's pickled return value
VALUE_KEY = "vk"  # the key of a return value too large for the hash (stored beside it: keys.value)
VALUE_SIGNATURE = "rsig"  # the worker's signature of the return value (signing.py)
HOST = "host"  # the host that ran it (absent when it is the one in the worker's name)
ALLOCATED = "alloc"  # what the worker gives it, "cores memory disk gpus" (claim.lua writes it with the lease)
MEASURED = "meas"  # resources measured (cores, memory, wall time, cpu time), JSON
TRANSFER = "xfer"  # bytes and times (us) of staging inputs and collecting outputs, JSON (absent: no files)
# Files (files.py): prefixes followed by the file's name inside the task's sandbox
INLINE_FILE = "in:"  # an input file's bytes, inline
CACHED_FILE = "cin:"  # the SHA-256 of a cached input file (bytes under keys.file)
INLINE_DIR = "tin:"  # an input directory as tar, inline
CACHED_DIR = "ctin:"  # the SHA-256 of a cached input directory's tar
OUTPUT_FILE = "o:"  # an output file's bytes
OUTPUT_DIR = "od:"  # an output directory as tar
INPUT_MODE = "im:"  # an input file's permission bits, octal text (absent: 0644, the usual)
OUTPUT_MODE = "om:"  # an output file's permission bits as the worker saw them, octal (absent: 0644)
URL_FILE = "url:"  # a URL the worker fetches into the sandbox (Task.specify_url)
CACHED_URL_FILE = "curl:"  # the same, kept in the worker's cache (keyed by the URL's digest)
COMMAND_FILE = "fcmd:"  # a shell command that makes the file, %% for its path (specify_file_command)
CACHED_COMMAND_FILE = "cfcmd:"  # the same, kept in the worker's cache (keyed by the command's digest)

STATE_B, MEMBER_B, SCORE_B, SUBMITTED_B = b"s", b"q", b"p", b"sub"
STARTED_B, FINISHED_B, ATTEMPTS_B, MAX_RETRIES_B = b"ts", b"tf", b"a", b"mr"
TOKEN_B, LAST_TOKEN_B, WORKER_B, CATEGORY_B = b"tok", b"lt", b"w", b"cat"
SPEC_B, FUNCTION_B, ARGS_B, BIG_B, SIGNATURE_B = b"spec", b"fn", b"args", b"big", b"sig"
PACK_SIZE_B, PACK_CANCELLED_B, PACK_ARGS_B, PACK_RESULTS_B = b"n", b"nc", b"pa", b"pr"
PACK_FAILED_B, PACK_FAILED_IDS_B, PACK_VALUE_KEYS_B, PACK_CANCELLED_MEMBER_B = b"nf", b"fids", b"vks", b"pc:"
RESULT_B, RETURN_STATUS_B, OUTPUT_B, ERROR_B = b"r", b"rs", b"out", b"err"
VALUE_B, VALUE_KEY_B, VALUE_SIGNATURE_B = b"val", b"vk", b"rsig"
HOST_B, ALLOCATED_B, MEASURED_B, TRANSFER_B = b"host", b"alloc", b"meas", b"xfer"
INLINE_FILE_B, CACHED_FILE_B, INLINE_DIR_B, CACHED_DIR_B = b"in:", b"cin:", b"tin:", b"ctin:"
OUTPUT_FILE_B, OUTPUT_DIR_B, INPUT_MODE_B, OUTPUT_MODE_B = b"o:", b"od:", b"im:", b"om:"
URL_FILE_B, CACHED_URL_FILE_B, COMMAND_FILE_B, CACHED_COMMAND_FILE_B = b"url:", b"curl:", b"fcmd:", b"cfcmd:"

# -- the states STATE holds: TaskState's values (codes.py, one definition), as the scripts write them
STATE_READY_B = b"%d" % TaskState.READY  # waiting in its ready queue
STATE_RUNNING_B = b"%d" % TaskState.RUNNING  # leased to a worker
STATE_FINISHED_B = b"%d" % TaskState.WAITING_RETRIEVAL  # result recorded, waiting for the manager
STATE_RETRIEVED_B = b"%d" % TaskState.RETRIEVED  # handed to the manager, kept for a TTL
UNFINISHED_STATES_B = (STATE_READY_B, STATE_RUNNING_B, STATE_FINISHED_B)  # still the manager's to retrieve

# -- an automatic category's label (keys.label: label.lua writes it, claim.lua reads it)
LABEL_VALUES = "v"  # 16 whole numbers (-1 unset), each four as cores memory disk gpus: the maximum
# of a first attempt, the maximum of a retry, the largest measured, the category's minimum
LABEL_SEEN = "seen"  # results of the category its manager has learned from
LABEL_DONE = "done"  # results of the category recorded (complete.lua counts them)

# -- a worker's record (keys.QueueKeys.worker; worker/loop.py registers it, renew.lua updates it)
WORKER_NAME = "name"  # the worker's name (also the record's key)
WORKER_HOST = "host"  # its host name
WORKER_PID = "pid"  # its process id
WORKER_VERSION = "version"  # the wq-redis version it runs
WORKER_RESOURCES = "resources"  # its total resources, JSON (renew.lua: present means registered)
WORKER_TAGS = "tags"  # the tags it takes, ","-joined ("" takes every tag)
WORKER_GPUS = "gpus"  # its GPUs (index, uuid, model), JSON
WORKER_STARTED = "started"  # when it started, seconds since the epoch
WORKER_STATUS = "status"  # its state and counts, JSON (refreshed by each heartbeat)
WORKER_METRICS = "metrics"  # the address of its metrics server (exporter's service discovery)
WORKER_SEEN = "seen"  # its last heartbeat, Redis ms
WORKER_SHUTDOWN = (
    "shutdown"  # present: asked to exit (WorkQueue.shutdown_workers; shutdown.lua writes, renew.lua reads)
)
WORKER_HOST_B, WORKER_VERSION_B, WORKER_RESOURCES_B, WORKER_TAGS_B = b"host", b"version", b"resources", b"tags"
WORKER_STATUS_B, WORKER_METRICS_B = b"status", b"metrics"
EXPORTED_WORKER_FIELDS_B = (WORKER_STATUS_B, WORKER_METRICS_B, WORKER_HOST_B, WORKER_TAGS_B, WORKER_RESOURCES_B)
"""The record fields export.lua returns per worker, in its order."""

# -- the queue's counters (keys.QueueKeys.stats), cumulative; counts in tasks (a pack's members each)
SUBMITTED_COUNT = "submitted"  # tasks queued
DISPATCHED_COUNT = "dispatched"  # tasks claimed by workers
RETRIEVED_COUNT = "retrieved"  # tasks handed to a manager and acknowledged
FAILED_COUNT = "failed"  # of those, tasks whose result was not SUCCESS
CANCELED_COUNT = "canceled"  # tasks cancelled (Work Queue's spelling)
REQUEUED_COUNT = "requeued"  # tasks put back after their lease expired
LOST_LEASES_COUNT = "lost_leases"  # leases that expired (requeued or given up)
WORKERS_LOST_COUNT = "workers_lost"  # workers given up for dead (heartbeat stopped)
LATE_RESULTS_COUNT = "late_results"  # results dropped: their attempt had lost its lease
FILES_UPLOADED_COUNT = "files_uploaded"  # cached inputs stored
FILE_BYTES_UPLOADED_COUNT = "file_bytes_uploaded"  # their bytes
# Bookkeeping of packs (not counters for people: store leaves out every name starting with PACK_COUNT_PREFIX)
PACK_COUNT_PREFIX = "pack_"  # what the names below start with
PACK_WAITING_PREFIX = "pack_waiting:"  # "pack_waiting:MEMBER": waiting packs' members beyond their first
PACK_RUNNING_PREFIX = "pack_running:"  # "pack_running:MEMBER": running packs' members beyond their first
PACK_DONE_COUNT = "pack_done"  # finished packs' members beyond their first, not yet retrieved
PACK_COUNT_PREFIX_B = b"pack_"
