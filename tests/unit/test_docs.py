"""The documentation holds together: the README stays short, and every link in the
Markdown pages points to a file of this repository and, with an anchor, to a heading of
that file (anchors made as GitHub makes them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The README is the front page: what metaproxy is and where to read on.
README_MAX_BYTES = 12_000

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
#: [text](target "title") and ![alt](target); the text may hold one level of brackets
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
_AUTOLINK = re.compile(r"<((?:[a-zA-Z][a-zA-Z0-9+.-]*:|www\.)[^>\s]*)>")
_SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)


def documents(root: Path = ROOT) -> list[Path]:
    """The Markdown pages whose links must hold."""
    named = [root / "README.md", root / "CHANGELOG.md", root / "BENCHMARKS.md"]
    named.append(root / "bench" / "README.md")
    return named + sorted((root / "docs").rglob("*.md"))


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fence = [], None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.lstrip().startswith(fence):
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def links(text: str) -> list[str]:
    """Every link target in prose: inline links, images, reference definitions and
    autolinks; code blocks and code spans hold none."""
    prose = _CODE_SPAN.sub("code", "\n".join(prose_lines(text)))
    found = [target.strip("<>") for target in _INLINE_LINK.findall(prose)]
    return found + _REFERENCE.findall(prose) + _AUTOLINK.findall(prose)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (links and code marks removed), lower
    case, every character but letters, digits, '_', '-' and spaces dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in "_- ")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors a page offers: one per heading (a repeated one gets -1, -2, ...) and
    any explicit <a id=...>."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            slug = github_anchor(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
        found.update(_HTML_ANCHOR.findall(line))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each link of C{page}, one line each."""
    problems = []
    for target in links(page.read_text()):
        where = f"{page.relative_to(root)}: ({target})"
        if _SCHEME.match(target) or target.startswith("/"):
            problems.append(f"{where} points outside the repository")
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            problems.append(f"{where} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor:
            if resolved.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(resolved.read_text()):
                problems.append(f"{where}: no heading makes #{anchor}")
    return problems


def test_the_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size < README_MAX_BYTES, f"README.md is {size} bytes: move detail into docs/"


def test_every_documented_page_exists():
    missing = [str(page.relative_to(ROOT)) for page in documents() if not page.exists()]
    assert missing == []
    assert len(documents()) > 10  # docs/ holds the operator and contributor pages


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    assert broken_links(page) == []


# --- the checker itself, on pages written here -------------------------------------------


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Side by side: `bench compare`", "side-by-side-bench-compare"),
        (
            "Through haproxy in network namespaces: `--target haproxy`",
            "through-haproxy-in-network-namespaces---target-haproxy",
        ),
        ("cloud-init's requests", "cloud-inits-requests"),
        ("`[neutron]` with `auth_type = password`", "neutron-with-auth_type--password"),
        ("ML2/OVN: not supported yet", "ml2ovn-not-supported-yet"),
        (
            "Reload (`SIGHUP`, `systemctl reload metaproxy`)",
            "reload-sighup-systemctl-reload-metaproxy",
        ),
        ("Latest figures (13:00 UTC, commit `efdbdea`)", "latest-figures-1300-utc-commit-efdbdea"),
        ("See [the guide](guide.md) first", "see-the-guide-first"),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading, anchor):
    assert github_anchor(heading) == anchor


def test_a_repeated_heading_gets_a_numbered_anchor():
    assert anchors("# Notes\n\n## Notes\n\n### Notes\n") == {"notes", "notes-1", "notes-2"}


def test_the_checker_finds_every_kind_of_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Set up\n\n```\n# not a heading\n```\n"
    )
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/guide.md) [ok anchor](docs/guide.md#set-up) [self](#top) ![img](docs/guide.md)\n"
        "[gone](docs/missing.md) [bad anchor](docs/guide.md#not-a-heading)\n"
        "[web](https://example.org/page) [up](../outside.md) [abs](/etc/passwd)\n"
        "[ref]: docs/nothing.md\n"
        "`[in code](docs/missing.md)`\n"
        "```\n[in a block](docs/missing.md)\n```\n"
        "# Top\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "README.md: (docs/missing.md): no such file",
        "README.md: (docs/guide.md#not-a-heading): no heading makes #not-a-heading",
        "README.md: (https://example.org/page) points outside the repository",
        "README.md: (../outside.md) points outside the repository",
        "README.md: (/etc/passwd) points outside the repository",
        "README.md: (docs/nothing.md): no such file",
    ]
