"""Entry point of the Pulumi program (Pulumi.yaml: main: infra/)."""

import sys

import pulumi

from common.config import ConfigError
from infra.program import build, load_cloud, load_hosts, load_kubeconfigs

stack_config = pulumi.Config("sovcloud")
try:
    build(load_cloud(stack_config), load_kubeconfigs(stack_config), load_hosts(stack_config))
except ConfigError as err:
    # Every problem of the stack config, each `field: message`, and no traceback; exit status 2 fails the run.
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
