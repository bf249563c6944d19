"""Failover / failback runbook as code: a pure function from a site/gateway state description to the
ordered steps and the resulting state. It decides and explains; dr/runbook.py executes the plan on a
deployed cloud (fence, restore from the target's own S3, promote its gateway route, verify; and failback).

State description (YAML/JSON):
  sites:
    dc-astana: {role: active, gateway: up, s3: up, control_plane: healthy, backup_age_seconds: 600}
    dc-almaty: {role: standby, gateway: up, s3: up, control_plane: healthy, backup_age_seconds: 900}
  internet_gateway: {routes_to: dc-astana}
`backup_age_seconds` is the age of the newest backup verified at that site (from drills/monitoring).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import problems_of


class FailoverError(Exception):
    pass


class SiteState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["active", "standby", "fenced"]
    gateway: Literal["up", "down"]
    s3: Literal["up", "down"]
    control_plane: Literal["healthy", "degraded", "down"]
    backup_age_seconds: float | None = Field(default=None, ge=0)


class Gateway(BaseModel):
    model_config = ConfigDict(extra="forbid")
    routes_to: str


class State(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: dict[str, SiteState] = Field(min_length=2)
    internet_gateway: Gateway


@dataclass
class Plan:
    action: str
    steps: list[str]
    state: dict
    warnings: list[str] = field(default_factory=list)
    executed: bool = False  # a plan; dr.runbook's result says executed: True


def parse_state(data: object) -> State:
    try:
        st = State.model_validate(data)
    except ValidationError as err:
        lines = [f"  {field}: {message}" for field, message in problems_of(err)]
        raise FailoverError("invalid site state:\n" + "\n".join(lines)) from None
    if st.internet_gateway.routes_to not in st.sites:
        raise FailoverError(
            f"internet_gateway.routes_to {st.internet_gateway.routes_to!r} is not a site in sites ({sorted(st.sites)})"
        )
    active = [n for n, s in st.sites.items() if s.role == "active"]
    if len(active) != 1:
        raise FailoverError(f"sites: exactly one site must have role: active, found {active}")
    return st


def _check_target(st: State, to: str, rpo_seconds: float, force: bool) -> list[str]:
    t = st.sites[to]
    problems = []
    if t.gateway != "up":
        problems.append(f"sites.{to}.gateway is {t.gateway}: the target must reach its Internet gateway")
    if t.control_plane != "healthy":
        problems.append(f"sites.{to}.control_plane is {t.control_plane}: restore the control plane first")
    if t.s3 != "up":
        problems.append(f"sites.{to}.s3 is down: the backups to restore from are unreachable")
    warnings = []
    if t.backup_age_seconds is None or t.backup_age_seconds > rpo_seconds:
        msg = (
            f"sites.{to}.backup_age_seconds is {t.backup_age_seconds}: no verified backup within the "
            f"RPO ({rpo_seconds}s) at the target"
        )
        if force:
            warnings.append(msg + " (forced: data newer than that backup is lost)")
        else:
            problems.append(msg + "; pass force to accept the data loss")
    if problems:
        raise FailoverError("refusing to switch to " + to + ":\n  " + "\n  ".join(problems))
    return warnings


def failover(data: object, src: str, dst: str, rpo_seconds: float, force: bool = False) -> Plan:
    """Move the active role from `src` (failed or being evacuated) to `dst`."""
    st = parse_state(data)
    for name, what in ((src, "--from"), (dst, "--to")):
        if name not in st.sites:
            raise FailoverError(f"{what} {name!r} is not a site in the state ({sorted(st.sites)})")
    if src == dst:
        raise FailoverError("--from and --to name the same site")
    if st.sites[src].role != "active":
        raise FailoverError(f"--from {src} has role {st.sites[src].role}, not active: nothing to fail over")
    warnings = _check_target(st, dst, rpo_seconds, force)
    s = st.sites[src]
    steps = []
    # Fence first: two active sites (split brain) is worse than a few minutes of outage.
    if s.gateway == "up":
        steps.append(f"fence {src}: withdraw its routes at the Internet access gateway and drain ingress")
        steps.append(f"fence {src}: scale tenant workloads to 0 and stop kube-apiserver writes")
    else:
        steps.append(
            f"fence {src}: gateway unreachable; revoke its transport peer key so it cannot rejoin "
            "as active when it comes back"
        )
    steps += [
        f"restore at {dst}: etcd snapshot and tenant volumes from the newest backup verified at {dst}",
        f"verify at {dst}: sentinel and drill checks pass (python -m dr restore ...)",
        f"promote {dst}: control plane serves tenant namespaces",
        f"switch the Internet access gateway routes from {src} to {dst}",
        f"backups: make {dst} the primary backup site, replicate to {src} once it is back",
    ]
    new = copy.deepcopy(st.model_dump())
    new["sites"][src]["role"] = "fenced"
    new["sites"][dst]["role"] = "active"
    new["internet_gateway"]["routes_to"] = dst
    return Plan("failover", steps, new, warnings)


def failback(data: object, src: str, dst: str, rpo_seconds: float) -> Plan:
    """Return the active role from `src` (the site that took over) to `dst` (the original site).

    Stricter than failover: a planned move, so the original site must be fully healthy and hold a
    backup of the current active site within the RPO; no force.
    """
    st = parse_state(data)
    if dst not in st.sites or src not in st.sites:
        raise FailoverError(f"--from/--to must be sites in the state ({sorted(st.sites)})")
    if st.sites[dst].role != "fenced":
        raise FailoverError(f"--to {dst} has role {st.sites[dst].role}; failback returns to a fenced site")
    plan = failover(
        {
            **st.model_dump(),
            "sites": {**st.model_dump()["sites"], dst: {**st.sites[dst].model_dump(), "role": "standby"}},
        },
        src,
        dst,
        rpo_seconds,
        force=False,
    )
    plan.action = "failback"
    plan.steps.insert(0, f"sync: take a fresh backup at {src} and verify it replicated to {dst} (dr backup)")
    plan.steps.insert(1, f"unfence {dst}: re-issue its transport peer key, keep its gateway routes withdrawn")
    return plan
