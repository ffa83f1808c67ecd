# -*- test-case-name: tests.integration.test_scale -*-
"""A scale check's results: its Markdown table (L{markdown_table}), its files
(L{write_result}: C{<out>/<stamp>-scale-<check>.json} and C{.md}), and both at the end of
a command (L{publish}: the table printed, the files written and named on stderr)."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MIB", "markdown_table", "write_result", "publish"]

MIB = 1024 * 1024


def markdown_table(title: str, rows: Sequence[tuple[str, str]]) -> str:
    """A check's table: C{title}, then one row per (figure, value)."""
    lines = [f"### {title}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def write_result(result: dict[str, Any], markdown: str, out: Path, command: str) -> list[Path]:
    """Write C{result} (JSON, format C{metaproxy-bench-scale/1}) and its table; return the
    files."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = out / f"{stamp}-scale-{result['check']}"
    json_path, md_path = Path(f"{base}.json"), Path(f"{base}.md")
    json_path.write_text(
        json.dumps(
            {"format": "metaproxy-bench-scale/1", "command": command, **result},
            indent=1,
            default=str,
        )
        + "\n"
    )
    md_path.write_text(f"`{command}`\n\n{markdown}")
    return [json_path, md_path]


def publish(
    result: dict[str, Any], markdown: str, out: Path, prog: str, argv: Sequence[str]
) -> list[Path]:
    """The end of a check's command C{prog argv}: print its table, write C{result} and the
    table (L{write_result}, the command recorded with them) and name the files on stderr."""
    print(markdown)
    command = (prog + " " + " ".join(argv)).strip()
    written = write_result(result, markdown, out, command)
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return written
