"""Every relative link in the project's Markdown files resolves: the file it names exists and, for a
``#anchor``, the target file has a heading with that anchor (GitHub's rules)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# generated or installed trees, not the project's documentation
EXCLUDED = {"runs", "mutants", "data"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)


def markdown_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.md")
        if not any(
            part in EXCLUDED or part.startswith(".") for part in path.relative_to(ROOT).parts[:-1]
        )
    )


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code spans blanked
    (links in code are not links)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CODE_SPAN.sub("", text)


def links(text: str) -> list[str]:
    prose = without_code(text)
    return INLINE_LINK.findall(prose) + REFERENCE_DEFINITION.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text without markup, lowercased, punctuation dropped,
    spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and '_', as GitHub does
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: its headings' (repeated ones get -1, -2,
    ...) and explicit HTML ones."""
    text = path.read_text(encoding="utf-8")
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found | set(HTML_ANCHOR.findall(text))


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path.read_text(encoding="utf-8")):
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http(s), mailto and other schemes are not checked
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(
                f"{target}: no heading with anchor #{anchor} in {file_part or path.name}"
            )
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    problems = broken_links(path)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_checker_finds_broken_links(tmp_path):
    (tmp_path / "other.md").write_text(
        "# A title, with `code` (and punctuation)!\n\n## Again\n## Again\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#a-title-with-code-and-punctuation) [ok](other.md#again-1)\n"
        "[ok](#local) [web](https://example.org/missing.md) `[code](missing.md)`\n"
        "```\n[in a block](missing.md)\n```\n"
        "## Local\n"
        "[bad file](missing.md) [bad anchor](other.md#nowhere) ![bad image](figure.png)\n"
        "[ref]: missing_too.md\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading with anchor #nowhere in other.md",
        "figure.png: no such file",
        "missing_too.md: no such file",
    ]


def test_every_accuracy_the_readme_quotes_is_in_the_committed_digest():
    """The README's demo figures (accuracies and shares written to four decimals) are numbers of the
    demo run whose digest is committed, not numbers typed by hand: each appears in
    ``figures/demo/RESULTS.md`` as committed."""
    from tests.test_environment import _committed

    digest = _committed("figures/demo/RESULTS.md")
    quoted = set(
        re.findall(r"(?<![\d.])0\.\d{4}(?!\d)", without_code((ROOT / "README.md").read_text()))
    )
    assert quoted, "the README quotes no demo figure"
    missing = sorted(number for number in quoted if number not in digest)
    assert not missing, f"README numbers that are not in the committed digest: {missing}"
