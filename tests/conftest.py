"""Session-wide test set-up: every project tool resolves from the toolchain cache and the venv."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from toolchain import HOME, REPO, tool_env


def pytest_configure(config):
    os.environ.update(tool_env())


def require_tool(name: str) -> str:
    """Path of a tool `make setup` provides; a missing tool fails the test (never skips it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run `make setup` (see `make doctor`)")
    return path


def pytest_sessionfinish(session, exitstatus):
    # A run that collected nothing proves nothing: make it fail loudly, not pass silently.
    if session.testscollected == 0 and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


def _keep_lab() -> bool:
    # Developer loop: use the lab `make lab` deployed as it is (no converge), and leave it up. Never in CI.
    return os.environ.get("SOVCLOUD_LAB_KEEP") == "1" and not os.environ.get("CI")


class LabBringUp:
    """`python -m lab up` (what `make lab` runs) in its own process group, output to a log file.

    Started by the first lab test, after every unit and tool test: on 2 cores both are CPU-bound, and
    overlapping them gained nothing (a CI run: the lab's 22 min became 31, ansible-lint's 43 s became 459 s)
    while the tests that time things ran on a loaded machine. A session that ends before it is up (Ctrl-C)
    stops it, as Ctrl-C of `make lab` would, and takes down what it had made.
    """

    def __init__(self):
        self.log = HOME / "logs" / "lab-up-tests.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "lab", "up"], cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.torn_down = False

    def wait(self) -> None:
        if self.proc.wait() != 0:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])
            pytest.fail(f"`python -m lab up` failed (exit {self.proc.returncode}; whole log {self.log}):\n{tail}",
                        pytrace=False)

    def tear_down(self) -> None:
        from lab import api

        if self.torn_down:
            return
        self.torn_down = True
        if self.proc.poll() is None:
            # As Ctrl-C of `make lab` would: pulumi cancels and releases its stack lock. Its plugins (and the
            # playbooks they run) sit in process groups of their own; what is left after a bounded wait is killed.
            tree = _descendants(self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            for pid in tree | _descendants(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        # A test run leaves nothing behind: no container, network or process of the lab.
        api.down()


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, whatever its process group."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


_LAB_BRING_UP = pytest.StashKey[LabBringUp]()


def pytest_collection_modifyitems(session, config, items):
    # Unit and tool tests first, then the lab tests (one lab for all); `test_zz_*` tests tear shared things
    # down (the lab): they run after every other test, whatever directory they live in.
    items.sort(key=lambda item: (item.name.startswith("test_zz_"), item.get_closest_marker("lab") is not None))


def pytest_unconfigure(config):
    if (bring_up := config.stash.get(_LAB_BRING_UP, None)) is not None:
        bring_up.tear_down()


@pytest.fixture(scope="session")
def lab_deployment(pytestconfig):
    """The default lab brought up and deployed once per session, exactly as `make lab` does.

    Keys: config (LabConfig), kubeconfigs ({site: admin.conf}).
    """
    from lab import api, cluster
    from lab.config import load

    cfg = load()
    if _keep_lab():
        unhealthy = [r["node"] for r in api.status(cfg) if not r["healthy"]]
        if unhealthy:
            pytest.fail(f"SOVCLOUD_LAB_KEEP=1 but the lab is not healthy ({unhealthy}): run `make lab`")
    else:
        pytestconfig.stash[_LAB_BRING_UP] = LabBringUp()
        pytestconfig.stash[_LAB_BRING_UP].wait()
    yield {"config": cfg, "kubeconfigs": {e["site"]: e["kubeconfig"] for e in cluster.endpoints(cfg)}}
    if not _keep_lab():
        pytestconfig.stash[_LAB_BRING_UP].tear_down()


@pytest.fixture(scope="session")
def lab_outputs(lab_deployment):
    """The lab stack's outputs (secrets in clear), as `pulumi stack output --json --show-secrets` gives them."""
    from lab.deploy import lab_stack

    return {k: v.value for k, v in lab_stack(lab_deployment["config"]).outputs().items()}


@pytest.fixture(autouse=True)
def _lab_is_up_for_lab_tests(request):
    # Lab tests live in several directories and run in name order; whichever comes first brings it up.
    if request.node.get_closest_marker("lab"):
        request.getfixturevalue("lab_deployment")
