"""Kubernetes' version priority: v1 > v1beta2 > v1beta1 > v1alpha1 > anything not of that shape."""

from __future__ import annotations

import re

_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")
_STABILITY = {None: 3, "beta": 2, "alpha": 1}


def priority_key(version: str) -> tuple[int, int, int, str]:
    """Sort key: sorting ascending by it puts the preferred version first."""
    m = _KUBE_VERSION.match(version)
    if not m:
        return (1, 0, 0, version)
    major, stability, minor = m.groups()
    return (0, -_STABILITY[stability], -int(major) * 1000 - int(minor or 0), version)


def by_priority(versions: list[str]) -> list[str]:
    return sorted(versions, key=priority_key)
