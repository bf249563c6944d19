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
    """Resources echo their inputs; dynamic resources get deterministic stand-ins for generated values."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource":
            generated = {"Certificate": ("cert_pem", "key_pem", "not_after"),
                         "WireGuardKey": ("private_key", "public_key"), "SecretKey": ("value",),
                         "SigningKey": ("private_key_pem", "public_key_pem"), "KubeObject": ("uid",),
                         "Playbook": ("recap", "seconds")}
            kind = ("Certificate" if "common_name" in outputs else "WireGuardKey" if "endpoint" in outputs
                    else "SecretKey" if "bytes" in outputs else "SigningKey" if "purpose" in outputs
                    else "Playbook" if "playbook" in outputs else "KubeObject")
            for key in generated[kind]:
                outputs[key] = f"mock-{key}-{args.name}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@pytest.fixture(autouse=True)
def pulumi_mocks():
    pulumi.runtime.set_mocks(Mocks(), preview=False)
    yield


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
