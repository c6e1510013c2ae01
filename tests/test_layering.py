"""The library's modules import one way, in the order README's "How the code is laid out" lists them."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _order() -> list[list[str]]:
    """The README table's rows: the modules of each row, top to bottom."""
    text = (
        (ROOT / "README.md")
        .read_text()
        .split("## How the code is laid out", 1)[1]
        .split("\n## ", 1)[0]
    )
    return [
        re.findall(r"`([a-z_]+)`", line.split("|")[1])
        for line in text.splitlines()
        if line.startswith("| `")
    ]


def _imports(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "fer_lib":
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fer_lib.")
        ):
            found.add((node.module.split(".")[1], node.lineno))
        elif isinstance(node, ast.Import):
            found |= {
                (alias.name.split(".")[1], node.lineno)
                for alias in node.names
                if alias.name.startswith("fer_lib.")
            }
    return found


def test_every_module_is_listed_and_imports_only_those_above_it():
    rank = {module: row for row, modules in enumerate(_order()) for module in modules}
    modules = {path.stem for path in (ROOT / "fer_lib").glob("*.py")} - {"__init__"}
    assert modules <= set(rank), (
        f"modules missing from README's table: {sorted(modules - set(rank))}"
    )
    upward = [
        f"{path.stem} imports {name} (line {line})"
        for path in (ROOT / "fer_lib").glob("*.py")
        if path.stem in rank
        for name, line in _imports(path)
        if name in rank and rank[name] > rank[path.stem]
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))
