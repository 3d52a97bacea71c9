"""wq-redis uses only the public API of the libraries it depends on: no module of ours
imports a private module of another package (a dotted path with a part starting with
"_", like ``redis._parsers``), which a minor release may move or remove."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "wq_redis"


def private_imports(source: str) -> list[str]:
    """The private modules of other packages that ``source`` imports (relative imports are ours)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found += [
            name
            for name in names
            if name.split(".")[0] not in ("wq_redis", "__future__")
            and any(part.startswith("_") for part in name.split("."))
        ]
    return found


def test_no_module_imports_a_private_module_of_another_package():
    found = {
        str(path.relative_to(PACKAGE)): private_imports(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
        if private_imports(path.read_text())
    }
    assert found == {}


def test_a_private_import_is_found():
    sample = (
        "from __future__ import annotations\n"
        "import os\n"
        "from redis._parsers import Encoder\n"
        "from . import _ours\n"
        "import hiredis._x as h\n"
    )
    assert private_imports(sample) == ["redis._parsers", "hiredis._x"]
