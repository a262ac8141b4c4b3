"""docs/ARCHITECTURE.md's subject table, generated from the declarations in loranet.protocol.subjects.

    python -m loranet.protocol.doc            # print the table
    python -m loranet.protocol.doc --write    # replace it in docs/ARCHITECTURE.md

tests/unit/test_protocol.py fails when the document and the declarations drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import subjects as s

BEGIN = "<!-- subjects:begin (generated: python -m loranet.protocol.doc --write) -->"
END = "<!-- subjects:end -->"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def table() -> str:
    """The markdown table of every subject, consumer and bucket."""
    readers: dict[str, list[str]] = {}
    for c in s.CONSUMERS:
        readers.setdefault(c.subject.pattern, []).append(f"`{c.durable}`")
    readers.setdefault(s.WORK_ALL.pattern, []).append("`node-<node_id>`")
    rows = [
        "| subject | kept by | message → reply | max size | durable consumers | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for subject in s.SUBJECTS:
        if isinstance(subject, s.Request):
            kept, message = "request-reply", f"`{subject.schema.__name__}` → `{subject.reply.__name__}`"
        elif subject.stream is None:
            kept, message = "core NATS (not stored)", f"`{subject.schema.__name__}`"
        else:
            kind = "work queue" if subject.stream.work_queue else "limits"
            kept, message = f"{subject.stream.name} ({kind})", f"`{subject.schema.__name__}`"
        rows.append(
            f"| `{subject.pattern}` | {kept} | {message} | {_size(subject.max_bytes)} | "
            f"{', '.join(readers.get(subject.pattern, [])) or '—'} | {subject.doc} |"
        )
    rows += ["", "| KV bucket | holds |", "| --- | --- |"]
    rows += [f"| `{name}` | {what} |" for name, what in s.BUCKETS.items()]
    return "\n".join(rows)


def section() -> str:
    return f"{BEGIN}\n{table()}\n{END}"


def current(doc: str) -> str:
    """The generated section as it stands in `doc` ("" when missing)."""
    if BEGIN not in doc or END not in doc:
        return ""
    return doc[doc.index(BEGIN) : doc.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--write" not in args:
        print(table())
        return 0
    path = Path(__file__).resolve().parents[3] / "docs" / "ARCHITECTURE.md"
    doc = path.read_text()
    old = current(doc)
    if not old:
        print(f"error: {path} has no {BEGIN} … {END} section", file=sys.stderr)
        return 1
    path.write_text(doc.replace(old, section()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
