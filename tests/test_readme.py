"""The documentation quotes measured figures from committed result files, verbatim, and its links lead somewhere.

The pages: README.md (the front door), CONTRIBUTING.md, benchmarks/README.md and docs/*.md. A page quotes
benchmarks/results/<name>.md between `<!-- name.md -->` and `<!-- /name.md -->`, each marker on a line of its own.
"""
import re

import pytest

from course_lib import config

ROOT = config.PROJECT_ROOT
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]

QUOTE = re.compile(r"^<!-- (\S+\.md) -->\n(.*?)^<!-- /\1 -->$", re.S | re.M)
OPENING = re.compile(r"^<!-- ([^\s/]\S*\.md) -->$", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _name(path):
    return str(path.relative_to(ROOT))


def _prose(text):
    """The page without fenced code blocks and code spans, where nothing is a link or a heading."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading)                  # inline HTML
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)     # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    """Every heading anchor of a markdown page, duplicates numbered as GitHub numbers them (-1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", path.read_text()), re.M):
        slug = github_slug(heading)
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_the_pages_exist():
    for page in PAGES:
        assert page.is_file(), f"{_name(page)} is missing"


def test_slugs_are_githubs():
    assert github_slug("Why our own grader instead of `nbgrader autograde`") == \
        "why-our-own-grader-instead-of-nbgrader-autograde"
    assert github_slug("Lessons: written in source/, built into notebooks/") == \
        "lessons-written-in-source-built-into-notebooks"
    assert github_slug("Start: two commands") == "start-two-commands"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_each_quoted_results_block_equals_its_file(page):
    text = page.read_text()
    quoted = QUOTE.findall(text)
    opened = OPENING.findall(text)
    assert len(quoted) == len(opened), f"{_name(page)}: a <!-- name.md --> marker without its closing marker"
    for name, block in quoted:
        assert (RESULTS / name).exists(), f"{_name(page)} quotes {name}, which benchmarks/results/ does not hold"
        assert block == (RESULTS / name).read_text(), f"{_name(page)}'s copy of {name} differs from the file"


def test_the_results_are_quoted_somewhere():
    quoted = {name for page in PAGES for name, _ in QUOTE.findall(page.read_text())}
    assert quoted, "no page quotes a results file"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_lead_to_a_file_and_a_heading(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto:: not a file of this repository
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {path}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: {_name(linked)} has no heading #{fragment}")
    assert not broken, f"{_name(page)} links nowhere: " + "; ".join(broken)
