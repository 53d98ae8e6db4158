"""The JSONPath subset that CRD `additionalPrinterColumns` use.

Supported: `.a.b`, `.a[0]`, `.a[*]`, `.a['key.with.dots']`, and filters
`.a[?(@.type=="Ready")]` (== and != on a field); the first value found is the column's cell.
"""

from __future__ import annotations

import re
from typing import Any

from vwproxy.kube import errors

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-$]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<star>\*)\]"""
    r"""|\[['"](?P<quoted>[^'"]+)['"]\]"""
    r"""|\[\?\(@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*(?P<fval>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\]"""
)

Step = tuple[str, Any]


def compile_path(path: str) -> list[Step]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise errors.bad_request(f"unsupported JSONPath {path!r} at {text[pos:]!r}")
        if m.group("field") is not None:
            steps.append(("field", m.group("field")))
        elif m.group("index") is not None:
            steps.append(("index", int(m.group("index"))))
        elif m.group("star") is not None:
            steps.append(("star", None))
        elif m.group("quoted") is not None:
            steps.append(("field", m.group("quoted")))
        else:
            value = m.group("fval").strip("\"'")
            steps.append(("filter", (m.group("fpath").split("."), m.group("op"), value)))
        pos = m.end()
    return steps


def _get(obj: Any, fields: list[str]) -> Any:
    for name in fields:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def find(obj: Any, steps: list[Step]) -> list[Any]:
    """Every value the path reaches (possibly none)."""
    current = [obj]
    for kind, arg in steps:
        nxt: list[Any] = []
        for value in current:
            if kind == "field" and isinstance(value, dict) and arg in value:
                nxt.append(value[arg])
            elif kind == "index" and isinstance(value, list) and -len(value) <= arg < len(value):
                nxt.append(value[arg])
            elif kind == "star":
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            elif kind == "filter" and isinstance(value, list):
                fields, op, wanted = arg
                for item in value:
                    got = _get(item, fields)
                    text = str(got).lower() if isinstance(got, bool) else "" if got is None else str(got)
                    if (text == wanted) == (op == "=="):
                        nxt.append(item)
        current = nxt
    return current
