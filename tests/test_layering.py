"""The library's modules import one way, in the order CONTRIBUTING.md's "How the
code is laid out" lists them."""

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fer_lib"


def _order() -> list[list[str]]:
    """The table's rows: the modules of each row (dotted below ``fer_lib``), top to bottom."""
    text = (
        (ROOT / "CONTRIBUTING.md")
        .read_text()
        .split("## How the code is laid out", 1)[1]
        .split("\n## ", 1)[0]
    )
    return [
        re.findall(r"`([a-z_.]+)`", line.split("|")[1])
        for line in text.splitlines()
        if line.startswith("| `")
    ]


def _modules() -> dict[str, Path]:
    """Every module of the library, dotted below ``fer_lib``; packages'
    ``__init__`` files hold no code."""
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def _imports(path: Path, modules: set[str]) -> set[tuple[str, int]]:
    """The library's modules that ``path`` imports, with the line of each import."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fer_lib"):
            base = node.module.removeprefix("fer_lib").lstrip(".")
            for alias in node.names:
                # `from fer_lib.data import rafdb` imports a module, `from fer_lib import models` (a
                # package) all its modules, `from fer_lib.data.rafdb import X` a name of one module
                dotted = f"{base}.{alias.name}".lstrip(".")
                target = dotted if _within(dotted, modules) else base
                found |= {(name, node.lineno) for name in _within(target, modules)}
        elif isinstance(node, ast.Import):
            found |= {
                (alias.name.removeprefix("fer_lib."), node.lineno)
                for alias in node.names
                if alias.name.startswith("fer_lib.")
            }
    return found


def _within(name: str, modules: set[str]) -> set[str]:
    """A module itself, or every module of a package (``models`` re-exports its modules' names)."""
    if name in modules:
        return {name}
    return {module for module in modules if module.startswith(f"{name}.")}


def test_every_module_is_listed_and_imports_only_those_above_it():
    rank = {module: row for row, modules in enumerate(_order()) for module in modules}
    modules = _modules()
    assert set(modules) <= set(rank), (
        f"modules missing from CONTRIBUTING.md's table: {sorted(set(modules) - set(rank))}"
    )
    assert set(rank) <= set(modules), (
        "CONTRIBUTING.md's table lists modules that do not exist: "
        f"{sorted(set(rank) - set(modules))}"
    )
    upward = [
        f"{name} imports {imported} (line {line})"
        for name, path in modules.items()
        for imported, line in _imports(path, set(modules))
        if imported in rank and rank[imported] > rank[name]
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))
    unknown = [
        f"{name} imports fer_lib.{imported} (line {line})"
        for name, path in modules.items()
        for imported, line in _imports(path, set(modules))
        if imported and imported not in rank
    ]
    assert not unknown, "imports of no listed module:\n" + "\n".join(sorted(unknown))


def test_every_package_has_an_init_and_no_source_is_ignored():
    """A package without ``__init__.py`` imports here as a namespace package but is left out of a
    wheel; a source file that .gitignore matches never reaches a clone."""
    missing = [
        folder.relative_to(ROOT).as_posix()
        for folder in {path.parent for path in PACKAGE.rglob("*.py")}
        if not (folder / "__init__.py").exists()
    ]
    assert not missing, f"packages without __init__.py: {missing}"
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        [
            "git",
            "ls-files",
            "--others",
            "--ignored",
            "--exclude-standard",
            "fer_lib",
            "notebooks",
            "tests",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ignored = [path for path in ignored if "__pycache__" not in path and not path.endswith(".pyc")]
    assert not ignored, f"source files that .gitignore hides from every clone: {ignored}"
