"""The lock files against pyproject.toml: a cheap guard against drift.

`make lock` writes requirements.lock (the runtime dependencies) and requirements-test.lock
(those plus the [test] extra). A dependency added to pyproject.toml, or a bound moved past
the locked version, without `make lock` fails here, before a fresh clone or the Docker
image installs something other than what was tested.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
# What the locks are made for (see LOCK_FLAGS in the Makefile): markers are judged for it.
LOCK_ENVIRONMENT = {
    "python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython",
}
# Packages an extra we ask for brings in, checked as well (the lock names no extras).
EXTRA_PACKAGES = {("psycopg", "binary"): "psycopg-binary"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _declared(*extras: str) -> list[Requirement]:
    project = _project()
    lines = list(project["dependencies"])  # type: ignore[call-overload]
    for extra in extras:
        lines += project["optional-dependencies"][extra]  # type: ignore[index]
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(LOCK_ENVIRONMENT)]


def _pins(lock: Path) -> dict[str, str]:
    """{normalised name: version} of a lock file; every pin must carry a hash."""
    pins: dict[str, str] = {}
    entries = re.split(r"\n(?=\S)", lock.read_text(encoding="utf-8"))
    for entry in entries:
        match = _PIN.match(entry)
        if match is None:
            continue
        name = canonicalize_name(match.group(1))
        assert "--hash=sha256:" in entry, f"{lock.name}: {name} has no hash"
        pins[name] = match.group(2)
    return pins


def _missing_or_outside(reqs: list[Requirement], pins: dict[str, str]) -> list[str]:
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req}: not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req}: locked at {pins[name]}")
        for extra in req.extras:
            package = EXTRA_PACKAGES.get((name, extra))
            if package is not None and package not in pins:
                problems.append(f"{req}: {package} (its [{extra}]) not in the lock")
    return problems


@pytest.mark.parametrize(("lock", "extras"), [(RUNTIME_LOCK, ()), (TEST_LOCK, ("test",))],
                         ids=["requirements.lock", "requirements-test.lock"])
def test_lock_has_every_declared_dependency(lock: Path, extras: tuple[str, ...]) -> None:
    problems = _missing_or_outside(_declared(*extras), _pins(lock))
    assert not problems, f"{lock.name} is out of date; run `make lock`:\n" + "\n".join(problems)


def test_test_lock_keeps_the_runtime_versions() -> None:
    # One venv runs the demo and the tests: they must test what the image installs.
    runtime, test = _pins(RUNTIME_LOCK), _pins(TEST_LOCK)
    differ = {n: (v, test.get(n)) for n, v in runtime.items() if test.get(n) != v}
    assert not differ, f"runtime pins differ in {TEST_LOCK.name}; run `make lock`: {differ}"


def test_drift_is_caught() -> None:
    """The guard itself: a missing package, a moved bound and a lost extra are reported."""
    pins = _pins(RUNTIME_LOCK)
    del pins["orjson"], pins["psycopg-binary"]
    problems = _missing_or_outside(
        [Requirement("Orjson>=3.9"), Requirement(f"numpy>{pins['numpy']}"),
         Requirement("psycopg[binary]>=3.1")], pins,
    )
    assert len(problems) == 3, problems
    assert "not in the lock" in problems[0] and "locked at" in problems[1], problems
    assert "psycopg-binary" in problems[2], problems
