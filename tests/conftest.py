"""Session-wide test set-up: every project tool resolves from the toolchain cache and the venv."""

import os
import shutil

import pytest

from toolchain import tool_env


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


def pytest_collection_modifyitems(session, config, items):
    # `test_zz_*` tests tear shared things down (the lab): run them after every other test, whatever
    # directory they live in, so no later test finds the lab gone.
    items.sort(key=lambda item: item.name.startswith("test_zz_"))


@pytest.fixture(scope="session")
def lab_deployment():
    """The default lab brought up and deployed once per session, exactly as `make lab` does.

    Keys: config (LabConfig), infra (lab.api.up), deploy (lab.deploy.deploy), kubeconfigs ({site: admin.conf}).
    """
    from lab import api, cluster
    from lab.config import load
    from lab.deploy import deploy

    cfg = load()
    if os.environ.get("SOVCLOUD_LAB_KEEP") == "1" and not os.environ.get("CI"):
        # Developer loop: use the lab `make lab` deployed as it is (no converge), and leave it up.
        unhealthy = [r["node"] for r in api.status(cfg) if not r["healthy"]]
        if unhealthy:
            pytest.fail(f"SOVCLOUD_LAB_KEEP=1 but the lab is not healthy ({unhealthy}): run `make lab`")
        yield {"config": cfg, "infra": None, "deploy": None,
               "kubeconfigs": {e["site"]: e["kubeconfig"] for e in cluster.endpoints(cfg)}}
        return
    infra = api.up(cfg)
    deployment = deploy(cfg)
    yield {"config": cfg, "infra": infra, "deploy": deployment, "kubeconfigs": deployment["kubeconfigs"]}
    # A test run leaves nothing behind: no container, network or process of the lab.
    api.down(cfg)


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
