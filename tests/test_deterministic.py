"""Deterministic mode: logical cluster names derived from workspace paths (the same on every run
and machine) and a fixed proxy RV base, so tests may assert on both."""

from __future__ import annotations

import re
from pathlib import Path

from vwproxy.core.rv import DETERMINISTIC_BASE
from vwproxy.kube.kcp import LOGICAL_CLUSTER_NAME_LENGTH, path_logical_cluster_name
from vwproxy.testing.proxy import RunningProxy

PATHS = ("root:provider", "root:rival", "root:consumer-1", "root:consumer-4", "root:team-a")
# The example topology's events stay far below this many RVs.
EXAMPLE_RVS = 100_000


def names_and_rv(data_dir: Path, deterministic: bool) -> tuple[dict[str, str], int]:
    with RunningProxy(data_dir, deterministic=deterministic) as proxy:
        proxy.settle()
        names = {path: proxy.cluster_of(path) for path in PATHS}
        with proxy.client() as client:
            slice_obj = client.get(f"{proxy.workspace_url('root:provider')}/apis/apis.kcp.io/v1alpha1/apiexportendpointslices/widgets").json()
            listed = client.get(f"{slice_obj['status']['endpoints'][0]['url']}/clusters/*/apis/example.dev/v1alpha1/widgets").json()
    return names, int(listed["metadata"]["resourceVersion"])


def test_two_fresh_runs_give_the_same_names_derived_from_the_paths(tmp_path: Path) -> None:
    first, first_rv = names_and_rv(tmp_path / "one", deterministic=True)
    second, second_rv = names_and_rv(tmp_path / "two", deterministic=True)
    assert first == second == {path: path_logical_cluster_name(path) for path in PATHS}
    assert all(re.fullmatch(f"[0-9a-z]{{{LOGICAL_CLUSTER_NAME_LENGTH}}}", name) for name in first.values())
    assert DETERMINISTIC_BASE < first_rv < DETERMINISTIC_BASE + EXAMPLE_RVS
    assert DETERMINISTIC_BASE < second_rv < DETERMINISTIC_BASE + EXAMPLE_RVS


def test_without_it_names_are_random_and_rvs_start_from_the_clock(tmp_path: Path) -> None:
    first, rv = names_and_rv(tmp_path / "one", deterministic=False)
    second, _ = names_and_rv(tmp_path / "two", deterministic=False)
    assert set(first.values()).isdisjoint(second.values())
    assert rv > DETERMINISTIC_BASE * 1_000_000


def test_the_names_are_stable_constants() -> None:
    # Pinned: a test in any language may hard-code them, so they must never change.
    assert path_logical_cluster_name("root:provider") == "1uhc1e4o7ozqb0rn"
    assert path_logical_cluster_name("root:consumer-1") == "2hd9kz701t3qorqb"
    assert path_logical_cluster_name("root:a") != path_logical_cluster_name("root:b")
