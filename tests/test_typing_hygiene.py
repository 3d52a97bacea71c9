"""Every ``# type: ignore`` left in the package names what it silences and says why.

A bare ignore hides any error that later appears on its line, and one without a reason
cannot be judged when the code around it changes.  So each must read
``# type: ignore[code]  # why`` (mypy's ``warn_unused_ignores`` already refuses one that
silences nothing).  Comments are found with ``tokenize``: a string that merely mentions
an ignore, like the samples below, does not count.
"""

from __future__ import annotations

import io
import pathlib
import re
import tokenize

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "wq_redis"

IGNORE = re.compile(r"#\s*type:\s*ignore\b")
# the error codes in brackets, then another comment holding the reason (a word at least)
REASONED = re.compile(r"#\s*type:\s*ignore\[[a-z][a-z-]*(?:,\s*[a-z][a-z-]*)*\]\s*#\s*\w")


def unreasoned_ignores(source: str) -> list[tuple[int, str]]:
    """(line, comment) of each ``type: ignore`` comment in ``source`` lacking a code or a reason."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and IGNORE.search(token.string) and not REASONED.search(token.string):
            found.append((token.start[0], token.string))
    return found


@pytest.mark.parametrize(
    "line, accepted",
    [
        ("x = f()  # type: ignore[assignment]  # f is typed too loosely\n", True),
        ("x = f()  # type: ignore[arg-type, misc]  # both: see f's docstring\n", True),
        ("x = f()  # type: ignore\n", False),  # no code
        ("x = f()  # type: ignore  # a reason but no code\n", False),
        ("x = f()  # type: ignore[assignment]\n", False),  # no reason
        ("x = f()  # type: ignore[assignment]  #\n", False),  # an empty reason
        ("x = f()  # type: ignore[]  # no code in the brackets\n", False),
        ('x = "# type: ignore"  # a string, not a comment\n', True),
    ],
)
def test_the_check_tells_a_reasoned_ignore_from_the_others(line: str, accepted: bool) -> None:
    assert (unreasoned_ignores(line) == []) is accepted


def test_every_type_ignore_in_the_package_has_a_code_and_a_reason() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, PACKAGE
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {comment}"
        for path in files
        for line, comment in unreasoned_ignores(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "write `# type: ignore[code]  # why`:\n" + "\n".join(offenders)
