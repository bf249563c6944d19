"""Smoke test of the real Pulumi engine (CLI + our Python language host + dynamic providers).

Local file backend, passphrase secrets provider, no network: up -> preview shows no changes -> destroy.
"""

import json
import subprocess
from importlib import metadata

import pulumi
import pytest
from pulumi import automation as auto
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from tests.conftest import require_tool
from toolchain import pins, tool_env

pytestmark = pytest.mark.tools


class _FileProvider(ResourceProvider):
    """Writes a file: a real side effect the engine must create once and delete on destroy."""

    def create(self, props):
        from pathlib import Path

        Path(props["path"]).write_text(props["content"])
        return CreateResult(id_=props["path"], outs=props)

    def delete(self, id, props):
        from pathlib import Path

        Path(id).unlink()


class _File(Resource):
    def __init__(self, name, path, content):
        super().__init__(_FileProvider(), name, {"path": path, "content": content})


def test_cli_and_language_host_match_sdk():
    require_tool("pulumi")
    assert metadata.version("pulumi") == pins.PULUMI
    assert str(auto.PulumiCommand().version) == pins.PULUMI
    host = subprocess.run([require_tool("pulumi-language-python"), "--version"],
                          capture_output=True, text=True, check=True)
    assert host.stdout.strip() == pins.PULUMI


def test_up_preview_destroy(tmp_path):
    require_tool("pulumi")
    target = tmp_path / "hello.txt"

    def program():
        _File("hello", str(target), "sovcloud")
        pulumi.export("secret", pulumi.Output.secret("s3cr3t"))

    backend = tmp_path / "state"
    backend.mkdir()
    stack = auto.create_stack(
        "smoke",
        project_name="sovcloud-smoke",
        program=program,
        opts=auto.LocalWorkspaceOptions(
            work_dir=str(tmp_path),
            project_settings=auto.ProjectSettings(
                name="sovcloud-smoke", runtime="python", backend=auto.ProjectBackend(f"file://{backend}")
            ),
            secrets_provider="passphrase",
            env_vars={"PULUMI_CONFIG_PASSPHRASE": "smoke-test"},
        ),
    )
    up = stack.up()
    assert up.summary.result == "succeeded"
    assert up.summary.resource_changes == {"create": 2}
    assert target.read_text() == "sovcloud"
    assert up.outputs["secret"].secret
    # Secrets are encrypted in the state file, never plaintext.
    assert "s3cr3t" not in "".join(p.read_text() for p in backend.rglob("*.json"))

    preview = stack.preview()
    assert preview.change_summary == {"same": 2}

    destroy = stack.destroy()
    assert destroy.summary.result == "succeeded"
    assert not target.exists()
    stack.workspace.remove_stack("smoke")


def test_the_kubernetes_provider_plugin_is_installed_and_serves_its_schema_at_its_version():
    """setup's build of pulumi-resource-kubernetes, installed as a plugin: the engine starts it and asks for its
    schema, which carries the version `go generate` stamped in (nothing is downloaded: automatic plugin
    acquisition is off)."""
    require_tool("pulumi")
    assert metadata.version("pulumi-kubernetes") == pins.PULUMI_KUBERNETES  # the SDK asks for this plugin version
    out = subprocess.run(["pulumi", "package", "get-schema", f"kubernetes@{pins.PULUMI_KUBERNETES}"],
                         capture_output=True, text=True, timeout=300, env=tool_env())
    assert out.returncode == 0, out.stderr[-2000:]
    schema = json.loads(out.stdout)
    assert schema["name"] == "kubernetes" and schema["version"] == pins.PULUMI_KUBERNETES
    assert {"kubernetes:core/v1:Namespace", "kubernetes:apps/v1:Deployment",
            "kubernetes:helm.sh/v4:Chart"} <= set(schema["resources"])
