"""Entry point the Pulumi engine runs for the policy pack (`--policy-pack policies/pack`)."""

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.pack.rules import POLICIES

PolicyPack(name="sovcloud", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
