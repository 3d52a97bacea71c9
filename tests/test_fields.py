"""The hash-field schema has one home (protocol/fields.py): every field name and key
suffix the Lua scripts write as a literal is declared there (or in protocol/keys.py),
and no field has two names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from wq_redis.protocol import fields, keys

SCRIPTS = Path(fields.__file__).parent / "scripts"
FIELDS_SOURCE = Path(fields.__file__).read_text()

# Lower-case literals of the scripts that are neither fields nor keys: Lua's type names,
# the status of a TYPE reply and the Redis types it names, and claim.lua's tags for where
# a queue's head is.
LUA_WORDS = frozenset({"table", "string", "number", "ok", "set", "hash", "none", "z", "l"})
NAME_LIKE = re.compile(r"^[a-z_]+:?$")  # what a field name or key suffix looks like (not '%06d', not 'HSET')
KEY_PREFIX = re.compile(r"\bprefix\s*$")  # `prefix .. 't:'`: a key suffix follows
HASH_COMMAND = re.compile(r"^H[A-Z]+$")


def lua_tokens(source: str) -> list[tuple[str, str, str]]:
    """(kind, text, code before it on its line) of each string literal and identifier of a
    Lua source, comments left out.  Kinds: 'str', 'name'."""
    tokens: list[tuple[str, str, str]] = []
    i, line_start = 0, 0
    while i < len(source):
        char = source[i]
        if char == "\n":
            line_start = i + 1
        if source.startswith("--", i):  # a comment, to the end of its line
            end = source.find("\n", i)
            i = len(source) if end < 0 else end
            continue
        if char in "'\"":
            end = i + 1
            while source[end] != char:
                end += 2 if source[end] == "\\" else 1
            tokens.append(("str", source[i + 1 : end], source[line_start:i]))
            i = end + 1
            continue
        word = re.match(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", source[i:])
        if word:
            tokens.append(("name", word.group(), source[line_start:i]))
            i += len(word.group())
            continue
        i += 1
    return tokens


def names_used(source: str) -> tuple[set[str], set[str]]:
    """The field names and the key suffixes a Lua source writes as literals.

    Key suffixes: literals after ``prefix ..``.  Field names: every
    other lower-case name-like literal (hash commands' fields, tables of fields, literals
    compared with a field's name) save LUA_WORDS, and the field names claim.lua reads by
    identifier (``at.n``, ``{sub = true}``)."""
    field_names, key_suffixes = set(), set()
    for kind, text, before in lua_tokens(source):
        if kind == "str" and NAME_LIKE.match(text):
            if KEY_PREFIX.search(before.rstrip().removesuffix("..")):
                key_suffixes.add(text)
            elif text not in LUA_WORDS:
                field_names.add(text)
        elif kind == "name" and text.startswith("at."):  # claim.lua's index of a hash's fields
            field_names.add(text[3:])
    for table in re.findall(r"\{([^{}]*=\s*true[^{}]*)\}", re.sub(r"--[^\n]*", "", source)):
        field_names.update(re.findall(r"(\w+)\s*=\s*true", table))
    return field_names, key_suffixes


def declared_fields() -> set[str]:
    """Every str constant of fields.py: field names, field prefixes and counter names."""
    return {value for name, value in vars(fields).items() if name.isupper() and isinstance(value, str)}


def declared_key_suffixes() -> set[str]:
    """The key suffixes keys.py declares."""
    return {value for name, value in vars(keys).items() if name.isupper() and isinstance(value, str)}


def undeclared(source: str) -> tuple[list[str], list[str]]:
    """The field names and key suffixes ``source`` uses that fields.py and keys.py do not declare."""
    field_names, key_suffixes = names_used(source)
    return sorted(field_names - declared_fields()), sorted(key_suffixes - declared_key_suffixes())


def lua_files() -> list[Path]:
    return sorted(SCRIPTS.glob("*.lua")) + sorted((SCRIPTS / "include").glob("*.lua"))


def test_every_field_and_key_suffix_the_scripts_use_is_declared():
    missing = {}
    for path in lua_files():
        field_names, suffixes = undeclared(path.read_text())
        if field_names or suffixes:
            missing[str(path.relative_to(SCRIPTS))] = {"fields": field_names, "key suffixes": suffixes}
    assert not missing, f"declare these in protocol/fields.py (fields) or protocol/keys.py (key suffixes): {missing}"


def test_the_scripts_are_read_for_their_fields():
    """The parser finds the fields the scripts are known to use (it is not blind)."""
    used = set()
    for path in lua_files():
        used |= names_used(path.read_text())[0]
    assert {fields.STATE, fields.TOKEN, fields.PACK_SIZE, fields.PACK_CANCELLED_MEMBER, fields.BIG} <= used
    assert {fields.SUBMITTED_COUNT, fields.PACK_WAITING_PREFIX, fields.WORKER_SEEN} <= used


def test_an_undeclared_field_in_a_script_is_caught():
    sample = """
    -- a comment naming 'nonsense' is not code
    local t = redis.call('HMGET', KEYS[1], 's', 'zz_new')
    redis.call('HSET', KEYS[1], 'tok', '', 'also_new', 1)
    redis.call('HINCRBY', KEYS[2], 'new_counter:' .. m, 1)
    if at.fresh then return end
    local kept = {sub = true, brand = true}
    local key = prefix .. 'newkey:' .. id
    if type(t) == 'table' then return 'worker ' .. id .. ' said so' end
    """
    field_names, suffixes = undeclared(sample)
    assert field_names == ["also_new", "brand", "fresh", "new_counter:", "zz_new"]
    assert suffixes == ["newkey:"]


def test_declared_names_of_a_sample_pass():
    sample = "local t = redis.call('HMGET', prefix .. 't:' .. id, 's', 'q', 'pc:' .. id)"
    assert undeclared(sample) == ([], [])


def _sections() -> dict[str, dict[str, str]]:
    """fields.py's str constants (not the bytes forms), by section ("# -- " headers)."""
    sections: dict[str, dict[str, str]] = {}
    current = "(top)"
    tree = ast.parse(FIELDS_SOURCE)
    headers = [(n, line) for n, line in enumerate(FIELDS_SOURCE.splitlines(), 1) if line.startswith("# -- ")]
    for node in tree.body:
        for number, line in headers:
            if number < node.lineno:
                current = line
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            sections.setdefault(current, {})[node.targets[0].id] = node.value.value
    return sections


def test_no_field_has_two_names():
    sections = _sections()
    assert len(sections) >= 3  # task hash, worker record, counters
    for section, names in sections.items():
        by_value: dict[str, list[str]] = {}
        for name, value in names.items():
            by_value.setdefault(value, []).append(name)
        twice = {value: names for value, names in by_value.items() if len(names) > 1}
        assert not twice, f"{section}: one field, several names: {twice}"


def test_each_bytes_form_is_its_names_encoding():
    names = {name: value for name, value in vars(fields).items() if name.isupper()}
    forms = {name: value for name, value in names.items() if name.endswith("_B") and isinstance(value, bytes)}
    assert forms
    for name, value in forms.items():
        text = name.removesuffix("_B")
        if text in names:
            assert names[text].encode() == value, name


def test_the_states_are_task_states():
    from wq_redis.protocol.codes import TaskState

    assert [int(s) for s in fields.UNFINISHED_STATES_B] == [
        TaskState.READY,
        TaskState.RUNNING,
        TaskState.WAITING_RETRIEVAL,
    ]
    assert int(fields.STATE_RETRIEVED_B) == TaskState.RETRIEVED
