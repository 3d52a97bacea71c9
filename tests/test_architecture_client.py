"""The queue's helpers use it through its seam (wq_redis/client/seam.py), never its insides.

A ``WorkQueue``'s private attributes are read only by the queue itself (queue.py and the
parts it is assembled from, each through ``self``) and by seam.py; executor, mapping,
asyncwait, categories and every module above the client layer go through ``QueueSeam``,
the books (books.py) or the public API.  Checked from the source: any ``x._name`` where
``x`` is a queue (a name or attribute spelled ``queue``/``q``/``manager``, or a parameter
annotated ``WorkQueue``) fails, outside the modules allowed.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "wq_redis"
ALLOWED = {"client/queue.py", "client/seam.py"}  # the queue, and its one seam for helpers
QUEUE_NAMES = {"queue", "q", "manager", "work_queue"}
CHECKED_LAYERS = ("client", "embedded", "ops")


def _queue_parameters(tree: ast.AST) -> set[str]:
    """Names of parameters annotated as a WorkQueue anywhere in the module; not ``self``:
    a part of the queue (a mixin such as compat.py's) reads its own attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None and "WorkQueue" in ast.unparse(node.annotation):
            names.add(node.arg)
    return names - {"self", "cls"}


def _is_queue(node: ast.expr, queue_names: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in queue_names
    if isinstance(node, ast.Attribute):  # self.queue, executor.queue
        return node.attr in QUEUE_NAMES
    return False


def private_queue_reads(source: str) -> list[str]:
    """Each ``queue._name`` in ``source``: ``"line: expression"``."""
    tree = ast.parse(source)
    queue_names = QUEUE_NAMES | _queue_parameters(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and _is_queue(node.value, queue_names)
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_but_the_queue_and_its_seam_reads_a_queues_private_attributes():
    offences = {}
    for layer in CHECKED_LAYERS:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            relative = path.relative_to(PACKAGE).as_posix()
            if relative not in ALLOWED:
                found = private_queue_reads(path.read_text())
                if found:
                    offences[relative] = found
    assert offences == {}


def test_the_check_finds_a_private_read_through_any_spelling_of_a_queue():
    source = (
        "def f(queue, pool, jobs: 'WorkQueue'):\n"
        "    queue._results\n"
        "    pool.queue._retrieve()\n"
        "    jobs._store.wait_done(1)\n"
        "    queue.submit(task)\n"  # public: fine
        "    pool._futures\n"  # not a queue: fine
        "    self._books\n"  # a part of the queue on itself: fine
        "def g(self: 'WorkQueue'):\n"
        "    self._wait\n"  # a mixin of the queue on itself: fine
    )
    assert private_queue_reads(source) == ["2: queue._results", "3: pool.queue._retrieve", "4: jobs._store"]
