"""Every argument a Lua script is sent is one it reads, as its header numbers them.

Each script's header says what each position of ARGV holds ("-- ARGV: 1 task id, 2 lease
token"), and the callers (protocol/manager_calls.py, worker_calls.py) build their argument
lists from it.  A header that numbers a position the script never reads is a dead
argument sent on every call (the queue's key prefix was one, in ARGV[1] of every script
that builds keys, long after include/prefix.lua took it from KEYS[1]); a position read
but not in the header, or a header off by one after an argument went, misleads the next
caller.  So, per script: the positions it reads by number (``ARGV[n]``, comments left
out) are exactly those its header numbers ("n thing", or "a-b" for several), counted from
1 without a gap, and a tail of repeated arguments ("n.. pairs") starts right after them.
"""

from __future__ import annotations

import re

import pytest

from wq_redis.protocol.lua import SCRIPT_NAMES, script_source

# an item of a header's ARGV list: its number (or range "a-b", or open tail "n..") at the
# start of the list, after ", " or at the start of a continuation line
_ITEM = re.compile(r"(?:^|, |\n)(\d+)(?:-(\d+)(?=\s)|(\.\.)|(?=\s))")


def header_argv(source: str) -> str:
    """The text of a script's header after ``ARGV:``, continuation lines joined by "\\n"
    (a continuation is a comment line indented further than ``-- ``)."""
    lines = source.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("--") and "ARGV:" in line:
            text = [line.split("ARGV:", 1)[1].strip()]
            for more in lines[i + 1 :]:
                if not re.match(r"--\s{2,}\S", more):
                    break
                text.append(more[2:].strip())
            return "\n".join(text)
    return ""


def declared(header: str) -> tuple[list[int], int | None]:
    """The positions a header numbers one by one (ranges expanded), and where its open
    tail starts (None: it has none)."""
    positions: list[int] = []
    tail = None
    for first, last, open_tail in _ITEM.findall(header):
        if open_tail:
            tail = int(first)
        else:
            positions += range(int(first), int(last or first) + 1)
    return positions, tail


def read_by_number(source: str) -> set[int]:
    code = re.sub(r"--[^\n]*", "", source)
    return {int(n) for n in re.findall(r"\bARGV\[(\d+)\]", code)}


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_a_scripts_header_numbers_exactly_the_arguments_it_reads(name: str) -> None:
    source = script_source(name)
    positions, tail = declared(header_argv(source))
    assert positions == list(range(1, len(positions) + 1)), f"{name}.lua's ARGV header: {positions}"
    assert read_by_number(source) == set(positions), f"{name}.lua reads ARGV {sorted(read_by_number(source))}"
    if tail is not None:
        assert tail == len(positions) + 1, f"{name}.lua's repeated arguments start at {tail}"
        assert re.search(r"#ARGV|ARGV\[[a-z]|unpack\(ARGV", re.sub(r"--[^\n]*", "", source)), (
            f"{name}.lua never reads its tail"
        )


def test_no_script_is_sent_the_key_prefix() -> None:
    for name in SCRIPT_NAMES:
        assert "prefix" not in header_argv(script_source(name)).replace("token prefix", ""), name


def test_the_check_refuses_a_dead_or_misnumbered_argument() -> None:
    """The checker itself, on the header that the prefix's removal left behind and on two
    ways to get it wrong."""
    good = "-- ARGV: 1 task id, 2 lease ms,\n--       3-4 totals, 5.. id, token pairs\nlocal a = ARGV[1]\n"
    good += "local b = ARGV[2] + ARGV[3] + ARGV[4]\nfor i = 5, #ARGV do end\n"
    assert declared(header_argv(good)) == ([1, 2, 3, 4], 5)
    assert read_by_number(good) == {1, 2, 3, 4}
    dead = "-- ARGV: 1 key prefix (unused), 2 task id\nlocal id = ARGV[2]\n"
    assert declared(header_argv(dead))[0] == [1, 2] and read_by_number(dead) == {2}
    shifted = "-- ARGV: 1 task id, 2 lease ms\nlocal id = ARGV[2] -- ARGV[1] was the prefix\nlocal ms = ARGV[3]\n"
    assert read_by_number(shifted) == {2, 3} != set(declared(header_argv(shifted))[0])
