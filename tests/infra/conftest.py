"""Pulumi mock set-up and the guard that fails a component test which never checked a resolved value."""

from __future__ import annotations

import copy
from pathlib import Path

import pulumi
import pytest
import yaml

from infra import config as cfg

LAB = Path(__file__).resolve().parents[2] / "infra" / "stacks" / "lab.yaml"


def lab_data() -> dict:
    return copy.deepcopy(yaml.safe_load(LAB.read_text()))


class Mocks(pulumi.runtime.Mocks):
    """Resources echo their inputs; dynamic resources (named by type, infra/providers.py) get deterministic
    stand-ins for the values they generate."""

    GENERATED = {"Certificate": ("cert_pem", "key_pem", "not_after"), "WireGuardKey": ("private_key", "public_key"),
                 "SecretKey": ("value",), "SigningKey": ("private_key_pem", "public_key_pem"),
                 "Ed25519Key": ("private_key_pem", "public_key_pem"), "Playbook": ("recap", "seconds")}

    def __init__(self):
        self.resources: dict[str, pulumi.runtime.MockResourceArgs] = {}  # by name: what each was declared with

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources[args.name] = args
        outputs = dict(args.inputs)
        if args.typ.startswith("pulumi-python:dynamic/sovcloud:"):
            for key in self.GENERATED[args.typ.rsplit(":", 1)[1]]:
                outputs[key] = f"mock-{key}-{args.name}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@pytest.fixture(autouse=True)
def pulumi_mocks():
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    yield mocks


class Checks:
    """Count checks that really ran: an Output callback that never resolves would otherwise pass."""

    def __init__(self):
        self.ran = 0

    def on(self, *outputs):
        def wrap(fn):
            def run(values):
                fn(*values)
                self.ran += 1

            return pulumi.Output.all(*outputs).apply(run)

        return wrap


@pytest.fixture
def checks(request):
    c = Checks()
    yield c
    call = getattr(request.node, "rep_call", None)
    if call is None or call.passed:  # a test that already failed needs no second complaint
        assert c.ran > 0, f"{request.node.name} asserted nothing on resolved Pulumi values"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def lab_cloud() -> cfg.Cloud:
    return cfg.parse(lab_data())
