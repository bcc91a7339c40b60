"""gateway.manscdp as a package: public names, and no imports from the rest of gbgw."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.manscdp as manscdp

PACKAGE = Path(manscdp.__file__).parent


def test_all_names_exist_and_are_unique() -> None:
    assert len(set(manscdp.__all__)) == len(manscdp.__all__)
    for name in manscdp.__all__:
        assert hasattr(manscdp, name), name


def test_sans_io_imports_only_the_standard_library_and_itself() -> None:
    allowed = {
        "__future__",
        "defusedxml",
        "collections",
        "dataclasses",
        "decimal",
        "enum",
        "itertools",
        "math",
        "re",
        "typing",
        "xml",
    }
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the package
                    continue
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"


def test_modules_stay_small() -> None:
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, path.name
