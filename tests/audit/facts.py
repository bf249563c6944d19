"""What an audit check may ask of the audited node besides its live state: its role and its inventory."""

from __future__ import annotations

import pytest


def only_for(node_role: str, *roles: str) -> None:
    if node_role not in roles:
        pytest.skip(f"not applicable to role {node_role}")


def inventory_var(host, name: str):
    """A host variable of the audited inventory (the stack's: gateways carry their transport and public
    addresses); None off an Ansible inventory."""
    if type(host.backend).__name__ != "AnsibleBackend":
        return None
    return host.ansible.get_variables().get(name)
