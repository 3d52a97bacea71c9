"""Every key a Lua script touches is in the slot of its declared keys.

Redis Cluster runs a script on the node of its declared keys (KEYS) and refuses a key of
another slot; an ACL user's key patterns are checked on each key the script touches.  A
script cannot declare every key it touches (a claim pops task ids and then reads those
tasks' hashes), so the rule this test checks is one that proves the slot instead:

1. the queue's prefix ``wq:{NAME}:`` is taken from KEYS[1] (include/prefix.lua), never
   from ARGV;
2. every key argument of every ``redis.call``/``redis.pcall`` (the first argument after
   the command; every argument of DEL, EXISTS and UNLINK), directly or through the
   variables, table fields, loop variables and function parameters it flows through, is
   ``KEYS[i]``, ``prefix``, ``own(x)`` (a key name read from data, kept only when it
   starts with the prefix), or one of those followed by ``.. suffix``.

Appending to a key that holds the hash tag ``{NAME}`` keeps the tag (Redis hashes the
text between the first ``{`` and the next ``}``), so every such key is in KEYS[1]'s slot.
The test follows names through the scripts' own text: a key whose origin it cannot trace
fails it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wq_redis.protocol.lua import SCRIPT_NAMES, script_source

SCRIPTS = Path(__file__).resolve().parent.parent / "wq_redis" / "protocol" / "scripts"
PREFIX_LINE = "local prefix = string.match(KEYS[1], '^wq:{[^}]*}:')"
ALL_KEYS = {"DEL", "EXISTS", "UNLINK", "TOUCH"}  # commands whose every argument is a key
_IDENT = re.compile(r"^[A-Za-z_][\w.]*$")


def split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside brackets and strings."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i].strip())
            start = i + len(sep)
            i += len(sep) - 1
        i += 1
    parts.append(text[start:].strip())
    return parts


def balanced(text: str, open_at: int) -> str:
    """The text inside the bracket opening at ``open_at``."""
    depth, quote, i = 0, "", open_at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    raise AssertionError(f"unbalanced bracket at {text[open_at : open_at + 40]!r}")


def expression_after(text: str, at: int) -> str:
    """The expression starting at ``at``: up to a top-level comma, closing bracket, line end
    or Lua keyword that ends it."""
    depth, quote, i = 0, "", at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (ch in ",\n;" or re.match(r"\s(then|end|do|else|elseif|and|or)\b", text[i:])):
            break
        i += 1
    return text[at:i].strip()


class KeyFlow:
    """Where the keys of one script come from."""

    def __init__(self, source: str) -> None:
        self.source = re.sub(r"--[^\n]*", "", source)  # comments out (none holds code)
        self.lines = self.source.splitlines()

    def key_arguments(self) -> list[str]:
        found = []
        for match in re.finditer(r"redis\.p?call\(", self.source):
            args = split_top(balanced(self.source, match.end() - 1))
            command = args[0].strip("'\"").upper()
            if command == "COMMAND" or args[0] == "command":  # read(): its key is a parameter
                found.append(args[1])
                continue
            if command in ("TIME",):
                continue
            found.extend(args[1:] if command in ALL_KEYS else args[1:2])
        return found

    def allowed(self, expr: str, seen: frozenset[str] = frozenset()) -> bool:
        expr = expr.strip()
        while expr.startswith("(") and balanced(expr, 0) == expr[1:-1]:
            expr = expr[1:-1].strip()
        if expr in seen:
            return True  # a cycle adds no new origin
        seen = seen | {expr}
        parts = split_top(expr, "..")
        if len(parts) > 1:
            return self.allowed(parts[0], seen)
        if re.fullmatch(r"KEYS\[[^\]]+\]", expr):
            return True
        if expr == "prefix":
            return self.prefix_from_keys()
        if re.fullmatch(r"own\(.*\)", expr, re.DOTALL):
            return True
        unpacked = re.fullmatch(r"unpack\((\w+)(,.*)?\)", expr, re.DOTALL)
        if unpacked:
            return self.elements_allowed(unpacked.group(1), None, seen)
        indexed = re.fullmatch(r"(\w+)\[(\d+)\]", expr)
        if indexed:
            return self.elements_allowed(indexed.group(1), int(indexed.group(2)), seen)
        if _IDENT.match(expr):
            origins = self.origins(expr.rsplit(".", 1)[-1])
            return bool(origins) and all(self.allowed(o, seen) if isinstance(o, str) else o(seen) for o in origins)
        return False

    def prefix_from_keys(self) -> bool:
        assigned = [line.strip() for line in self.lines if re.search(r"(?<![\w.])prefix\s*=(?!=)", line)]
        return bool(assigned) and all(line == PREFIX_LINE for line in assigned)

    def origins(self, name: str) -> list:
        """What ``name`` is assigned from: expressions, or checks (callables) for loop
        variables and function parameters."""
        found: list = []
        for line in self.lines:
            multi = re.match(r"^\s*(?:local\s+)?([\w.]+(?:\s*,\s*[\w.]+)+)\s*=(?!=)\s*(.*)$", line)
            if multi:
                names = [n.strip().rsplit(".", 1)[-1] for n in multi.group(1).split(",")]
                if name in names:
                    values = split_top(multi.group(2))
                    index = names.index(name)
                    found.append(values[index] if index < len(values) else "<call>")
                    continue
            for match in re.finditer(rf"(?<![\w.]){re.escape(name)}\s*=(?!=)", line):
                before = line[: match.start()].rstrip()
                if before.endswith(",") and multi:
                    continue
                found.append(expression_after(line, match.end()))
        for match in re.finditer(rf"for\s+(\w+)\s*,\s*{re.escape(name)}\s+in\s+ipairs\((\w+)\)", self.source):
            table = match.group(2)
            found.append(lambda seen, table=table: self.elements_allowed(table, None, seen))
        for match in re.finditer(r"function\s+(\w+)\(([^)]*)\)", self.source):
            params = [p.strip() for p in match.group(2).split(",")]
            if name in params:
                function, index = match.group(1), params.index(name)
                found.append(lambda seen, f=function, i=index: self.calls_allowed(f, i, seen))
        return found

    def calls_allowed(self, function: str, index: int, seen: frozenset[str]) -> bool:
        calls = [
            m
            for m in re.finditer(rf"(?<![\w.:]){re.escape(function)}\(", self.source)
            if not self.source[: m.start()].rstrip().endswith("function")
        ]
        for call in calls:
            args = split_top(balanced(self.source, call.end() - 1))
            if index < len(args) and not self.allowed(args[index], seen):
                return False
        return True

    def elements_allowed(self, table: str, index: int | None, seen: frozenset[str]) -> bool:
        """Every element (or element ``index``, of the tables a table holds) put into ``table``."""
        values = []
        for match in re.finditer(rf"(?<![\w.]){re.escape(table)}\[[^\]]+\]\s*=(?!=)", self.source):
            values.append(expression_after(self.source, match.end()))
        for match in re.finditer(rf"(?<![\w.]){re.escape(table)}\s*=\s*{{", self.source):
            values.extend(v for v in split_top(balanced(self.source, match.end() - 1)) if v)
        loop = re.search(rf"for\s+\w+\s*,\s*{re.escape(table)}\s+in\s+ipairs\((\w+)\)", self.source)
        if loop:  # a loop variable: the elements of the tables it walks
            return self.elements_allowed(loop.group(1), index, seen)
        if index is not None:
            rows = [split_top(balanced(v, 0)) for v in values if v.startswith("{")]
            return bool(rows) and all(index <= len(row) and self.allowed(row[index - 1], seen) for row in rows)
        return all(self.allowed(v, seen) for v in values)


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_key_a_script_touches_is_in_its_declared_keys_slot(name: str) -> None:
    flow = KeyFlow(script_source(name))
    untraced = [key for key in flow.key_arguments() if not flow.allowed(key)]
    assert not untraced, f"{name}.lua touches keys not derived from KEYS: {untraced}"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_no_script_builds_a_key_from_argv(name: str) -> None:
    source = re.sub(r"--[^\n]*", "", script_source(name))
    assert not re.search(r"(?<![\w.])prefix\s*=\s*ARGV", source)
    assert "--#include prefix" not in source  # every fragment included


def test_the_checker_refuses_what_breaks_the_rule() -> None:
    """The rule's checker itself: keys from ARGV, from data, or from a prefix given as an
    argument are refused; derived ones pass."""
    bad = KeyFlow(
        "local prefix = ARGV[1]\n"
        "local k = ARGV[2]\n"
        "redis.call('GET', prefix .. 't:1')\n"
        "redis.call('GET', k)\n"
        "local t = redis.call('HMGET', KEYS[1], 'vk')\n"
        "redis.call('DEL', t[1])\n"
    )
    assert [bad.allowed(k) for k in bad.key_arguments()] == [False, False, True, False]
    good = KeyFlow(
        f"{PREFIX_LINE}\n"
        "local function ring(key) redis.call('LPUSH', key, 1) end\n"
        "local c = {key = prefix .. 'ready:x'}\n"
        "redis.call('ZCARD', c.key)\n"
        "ring(KEYS[2])\n"
        "redis.call('DEL', own(redis.call('HGET', KEYS[1], 'vk')), KEYS[1] .. ':big')\n"
    )
    assert all(good.allowed(k) for k in good.key_arguments())
    ring_from_argv = KeyFlow("local function ring(key) redis.call('LPUSH', key, 1) end\nring(ARGV[1])\n")
    assert not all(ring_from_argv.allowed(k) for k in ring_from_argv.key_arguments())


def test_every_script_file_is_checked() -> None:
    assert {p.stem for p in SCRIPTS.glob("*.lua")} == set(SCRIPT_NAMES)
