"""The size of ``fer_lib`` at git revisions, by part: physical lines, code lines (no blank, comment
or docstring line) and code tokens (Python's tokenizer, comments and docstrings left out).

    python benchmarks/library_size.py REV [REV ...]

Modules of the flat layout (before ``fer_lib`` was grouped into subpackages) are counted under the
part that holds them now, so two revisions compare part by part.
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import tokenize

# the flat layout's modules -> the part that holds them now
FLAT = {
    "__main__": "cli",
    "synthetic": "data (synthetic)",
    "demo_layouts": "data (synthetic)",
    "report": "report",
    "verdicts": "report",
    "replication": "report",
    "landing": "report",
    "models": "models",
    "training": "training",
    "experiment": "run",
    "pipeline": "run",
    "scheduler": "run",
    "profiles": "run",
    "notebook": "run",
    "kernels": "run",
    "freshness": "run",
    "probes": "evaluation",
    "stats": "evaluation",
    "metrics": "evaluation",
    "explain": "evaluation",
    "explore": "apps",
    "predict": "apps",
    "crossdata": "apps",
    "distributed": "runtime",
    "precision": "runtime",
    "data": "data (readers)",
    "datasets": "data (readers)",
    "rafdb": "data (readers)",
    "layouts": "data (readers)",
    "affectnet": "data (readers)",
    "ferplus": "data (readers)",
    "ckplus": "data (readers)",
    "faces": "data (readers)",
    "landmarks": "data (readers)",
    "heatmaps": "data (readers)",
}
SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def part(path: str) -> str:
    """The part of the library a module belongs to (``fer_lib/<part>/<module>.py``)."""
    parts = path.split("/")
    stem = parts[-1].removesuffix(".py")
    if len(parts) == 2:
        return FLAT.get(stem, "settings, io")
    if parts[1] == "data":
        return FLAT.get(stem, "data (readers)")
    return parts[1]


def docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr):
            value = node.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                lines.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    return lines


def measure(source: str) -> tuple[int, int, int]:
    """(physical lines, code lines, code tokens) of one module."""
    docstrings = docstring_lines(ast.parse(source))
    code, tokens = set(), 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in SKIPPED or token.type == tokenize.ENDMARKER:
            continue
        if token.start[0] in docstrings:
            continue
        tokens += 1
        code.update(range(token.start[0], token.end[0] + 1))
    return source.count("\n"), len(code), tokens


def sizes(revision: str) -> dict[str, list[int]]:
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", revision, "fer_lib"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    totals: dict[str, list[int]] = {}
    for path in (p for p in listed if p.endswith(".py")):
        source = subprocess.run(
            ["git", "show", f"{revision}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        counts = totals.setdefault(part(path), [0, 0, 0])
        for k, value in enumerate(measure(source)):
            counts[k] += value
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revisions", nargs="+", help="git revisions (commits, branches, tags)")
    revisions = parser.parse_args().revisions
    measured = [sizes(revision) for revision in revisions]
    header = " | ".join(f"{r[:12]}: lines / code / tokens" for r in revisions)
    print(f"| part | {header} |\n|---|" + "---|" * len(revisions))
    for name in sorted(set().union(*measured)) + ["all"]:
        cells = []
        for counts in measured:
            row = [sum(c[k] for c in counts.values()) for k in range(3)]
            row = row if name == "all" else counts.get(name, [0, 0, 0])
            cells.append(" / ".join(f"{value:,}" for value in row))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
