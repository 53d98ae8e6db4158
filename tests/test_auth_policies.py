"""The bootstrap policy ships inside the package: a build of the package carries policies/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vwproxy.auth.policy import DEFAULT_POLICY_DIR, load_bootstrap_policy

ROOT = Path(__file__).resolve().parent.parent


def test_default_policy_dir_is_the_top_level_folder() -> None:
    assert DEFAULT_POLICY_DIR.resolve() == (ROOT / "policies").resolve()
    assert "system:kcp:workspace:access" in load_bootstrap_policy().cluster_roles


def test_a_build_of_the_package_carries_the_policies(tmp_path: Path) -> None:
    out = tmp_path / "build"
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    shipped = out / "vwproxy" / "auth" / "policies"
    assert not shipped.is_symlink()
    expected = {p.name for p in (ROOT / "policies").glob("*.yaml")}
    assert expected and {p.name for p in shipped.glob("*.yaml")} == expected
    assert (shipped / "examples" / "provider.yaml").is_file() and (shipped / "README.md").is_file()
