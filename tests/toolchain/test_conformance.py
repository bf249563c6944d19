"""`make conformance`'s parts that need no cluster: what it builds, and how it reads the suite's JUnit report."""

from __future__ import annotations

import toolchain.__main__ as setup
from bench import conformance

JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="Kubernetes e2e suite" tests="5">
 <testcase name="[sig-network] Services should serve a basic endpoint from pods  [Conformance]" status="passed"/>
 <testcase name="[sig-network] DNS should provide DNS for services  [Conformance]" status="failed">
  <failure message="dig: command not found">pod uses registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7</failure>
 </testcase>
 <testcase name="[sig-api-machinery] Aggregator should be able to support the sample API server [Conformance]"
   status="failed"><failure message="timed out waiting for the apiservice">the apiserver could not reach it
  </failure></testcase>
 <testcase name="[sig-apps] Job should do something [Conformance]" status="skipped"><skipped/></testcase>
 <testcase name="[sig-storage] not a conformance test" status="failed"><failure message="x"/></testcase>
</testsuite></testsuites>
"""


def test_summary_keeps_failures_with_a_stand_in_image_apart(tmp_path):
    junit = tmp_path / "junit_01.xml"
    junit.write_text(JUNIT)
    summary = conformance.summarize(junit)
    assert (summary["run"], summary["passed"], summary["skipped"]) == (3, 1, 1)
    assert [f["name"] for f in summary["failed"]] == [
        "[sig-api-machinery] Aggregator should be able to support the sample API server [Conformance]"]
    (stand_in,) = summary["failed_with_stand_in"]
    assert stand_in["images"] == ["jessie-dnsutils"] and "dig" in stand_in["message"]


def test_the_suite_is_built_from_the_clusters_own_module_and_version():
    tool = setup.conformance("1.33.13")
    assert set(tool.binaries()) == {"e2e.test", "ginkgo", "agnhost", "sample-apiserver", "nnp"}
    assert tool.tests == {"e2e.test": "k8s.io/kubernetes/test/e2e"}
    assert tool.overrides == {"k8s.io/sample-apiserver": "v0.33.5"}  # later zips are refused by the proxy
    assert tool.extra_modules == [f"github.com/onsi/ginkgo/v2/ginkgo@v{setup.pins.GINKGO}"]
    assert "-X k8s.io/component-base/version.gitVersion=v1.33.13" in tool.ldflags
