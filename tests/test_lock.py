"""The environment is the lock (issue 22): every distribution installed beside equinorm is pinned by
requirements.lock at exactly that version, and every pin that applies here is installed -- so a new
release of any dependency cannot reach a fresh clone, CI or a user's first run."""

from __future__ import annotations

import os
import site
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
# the venv's own tools: unpinned unless a package needs them
BOOTSTRAP = {"pip", "setuptools", "wheel"}


def pins(text: str) -> dict[str, str]:
    """name -> version of each line of a `uv pip compile` lock whose marker holds here."""
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is not None and not Marker(str(req.marker)).evaluate():
            continue
        (spec,) = req.specifier
        assert spec.operator == "==", f"{line}: a lock pins with =="
        name = canonicalize_name(req.name)
        assert name not in found, f"{name} pinned twice for this Python"
        found[name] = spec.version
    return found


def installed() -> dict[str, str]:
    """What pip list shows: the environment's site-packages (not the copies that setuptools
    vendors and puts on sys.path once it is imported)."""
    return {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions(path=site.getsitepackages())
        if canonicalize_name(d.metadata["Name"]) != "equinorm"
    }


def test_pins_parse_markers_and_versions():
    text = "a==1.0 ; python_full_version < '3.0'\n    # via x\nb==2.0 ; sys_platform != 'none'\n"
    assert pins(text) == {"b": "2.0"}


@pytest.mark.skipif(
    bool(os.environ.get("EQUINORM_UNLOCKED")), reason="make test-latest: newest versions, no lock"
)
def test_every_installed_distribution_is_the_locked_version_and_nothing_is_missing():
    locked, have = pins(LOCK.read_text()), installed()
    unpinned = {n: v for n, v in have.items() if n not in locked and n not in BOOTSTRAP}
    other = {n: (v, locked[n]) for n, v in have.items() if n in locked and locked[n] != v}
    missing = sorted(set(locked) - set(have))
    assert not unpinned, (
        f"installed but not in requirements.lock: {unpinned} (rm -r .venv; make install)"
    )
    assert not other, f"installed version != locked version: {other}"
    assert not missing, f"locked for this Python but not installed: {missing}"
