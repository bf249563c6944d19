"""The hardening lab test brings up its own standalone nodes (label sovcloud.lab.kind=standalone).

tests/conftest.py brings the shared default lab up for every `lab` test and takes it DOWN at the end of
the session. These tests never use that lab, and the shared lab is in use by other work (Kubernetes
bootstrap), so the same-named fixture is overridden here: a hardening run neither deploys nor removes it.
"""

import pytest


@pytest.fixture(autouse=True)
def _lab_is_up_for_lab_tests():
    yield
