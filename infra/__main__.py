"""Entry point of the Pulumi program (Pulumi.yaml: main: infra/)."""

import pulumi

from infra.program import build, load_cloud, load_hosts, load_kubeconfigs

stack_config = pulumi.Config("sovcloud")
build(load_cloud(stack_config), load_kubeconfigs(stack_config), load_hosts(stack_config))
