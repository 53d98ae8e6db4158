"""Helpers for decoded JSON values (dicts, lists, scalars) shared by the patch and apply code."""

from __future__ import annotations

from typing import Any


def deep_copy(value: Any) -> Any:
    """Copy a decoded JSON value iteratively (no recursion limit on deep input); scalars are shared."""
    if isinstance(value, dict):
        root: Any = {}
    elif isinstance(value, list):
        root = []
    else:
        return value
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for key, child in items:
            if isinstance(child, dict):
                new: Any = {}
                stack.append((child, new))
            elif isinstance(child, list):
                new = []
                stack.append((child, new))
            else:
                new = child
            # Containers are placed before they are filled, so list order holds.
            if isinstance(dst, dict):
                dst[key] = new
            else:
                dst.append(new)
    return root
