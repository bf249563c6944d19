"""`make conformance`: the Kubernetes conformance suite of a lab cluster's own version, run against one lab site.

What Sonobuoy does for kubespray, done offline:
1. build the suite (e2e.test), its runner (ginkgo) and agnhost from `k8s.io/kubernetes` at the cluster's version
   (toolchain `conformance`, cached like every Go-built tool);
2. build the test images the `[Conformance]` tests use, from those binaries and Debian's, as OCI archives under
   the exact names the suite asks for (`registry.k8s.io/e2e-test-images/agnhost:2.53`, ...), and import them into
   the site's workers: nothing is pulled. Images upstream builds from Alpine are stand-ins here (STAND_INS);
3. run the suite with the site's admin kubeconfig and write its JUnit report, then a summary that keeps the
   failures of tests that use a stand-in image apart from the cluster's own failures.

    python -m bench.conformance                       # every [Conformance] test, dc-astana (hours: a bench)
    python -m bench.conformance --focus 'sig-network'  # a subset (a regex over the test names)

The report goes to ~/.cache/sovcloud/lab/conformance/<time>/ (junit_01.xml, summary.json, e2e.log).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from lab import cluster, config, inventory, oci
from lab.nodes import ssh_args
from toolchain import HOME, tool_env
from toolchain.__main__ import conformance, go_module_dir
from toolchain.gobuild import build

REPORTS = HOME / "lab" / "conformance"
E2E_REPO = "registry.k8s.io/e2e-test-images"
# Host programs the stand-in images carry (with the libraries they link), from Debian packages: dig and getent
# for the DNS tests, curl and bash for the network ones.
HOST_PROGRAMS = {"/usr/bin/dig": "bind9-dnsutils", "/usr/bin/curl": "curl", "/bin/bash": "bash",
                 "/usr/bin/getent": "libc-bin", "/bin/nc.openbsd": "netcat-openbsd"}
# ... under the names the tests call them by (the tests' nc is netcat-openbsd's: -t, -u and -w as it has them).
# The shell is bash there too: Debian's static busybox sh runs its own applets before PATH (its nc, not the tests').
HOST_LINKS = {"/usr/bin/nc": "/bin/nc.openbsd", "/bin/sh": "bash"}
# Upstream's images that are stand-ins here, and how they differ (the summary names them beside a failure).
STAND_INS = {
    "agnhost": "agnhost built from the cluster's module on a static busybox with Debian's dig, curl, bash, "
               "netcat-openbsd (upstream: Alpine with bind-tools, iproute2, iperf, netcat-openbsd)",
    "busybox": "Debian's static busybox 1.35 with the host's bash as /bin/sh: that busybox's sh drops environment "
               "variables whose names are not shell identifiers (data-1), which the env tests set "
               "(upstream: busybox 1.36 on glibc)",
    "httpd": "busybox httpd on :80 serving /usr/local/apache2/htdocs (upstream: Apache httpd)",
    "nginx": "busybox httpd on :80 serving /usr/share/nginx/html (upstream: nginx)",
    "jessie-dnsutils": "busybox with Debian's dig (upstream: Debian jessie's dnsutils)",
    "pause": "busybox sleep (upstream: the pause binary)",
    "sample-apiserver": "k8s.io/sample-apiserver v0.33.5's server built with the cluster's apiserver libraries, on "
                        "a busybox (upstream: 1.29.2)",
    "etcd": "Debian's etcd 3.4 (upstream: etcd 3.5.21)",
    **{name: f"busybox httpd on :80 serving upstream's test/images/{name}/html (upstream: agnhost test-webserver)"
       for name in ("kitten", "nautilus")},
}
ROOT = "0:0"  # httpd and nginx bind :80 as root, as upstream's do; every test namespace sets its own policy


def _host_files() -> dict[str, oci.File]:
    """The host programs and every library they load, at their own paths (the host and the nodes are Debian 12)."""
    missing = sorted({pkg for prog, pkg in HOST_PROGRAMS.items() if not Path(prog).exists()})
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True,
                       capture_output=True)
    return cluster.with_libraries([Path(p) for p in HOST_PROGRAMS])


def _applets(busybox: oci.File) -> tuple[dict[str, oci.File], dict[str, str]]:
    """busybox, and a link per applet in /bin: what a shell image has."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "busybox"
        path.write_bytes(busybox.content)
        path.chmod(0o755)
        names = subprocess.run([str(path), "--list"], capture_output=True, text=True, check=True).stdout.split()
    return {"/bin/busybox": busybox}, {f"/bin/{n}": "busybox" for n in names if n != "busybox"}


def images(suite: dict[str, Path], out: Path, version: str) -> dict[str, Path]:
    """The test images by the names the suite asks for -> their archives in `out`."""
    busybox = cluster.static_busybox()
    shell, links = _applets(busybox)
    base = {**shell, "/etc/passwd": oci.File(
        b"root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home:/bin/sh\n"
        b"nobody:x:65534:65534::/:/bin/false\n"),
        "/etc/group": oci.File(b"root:x:0:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"),
        "/tmp/.keep": oci.File(b""), "/uploads/.keep": oci.File(b"")}  # noqa: S108 (a path in the image)
    tools = _host_files()
    agnhost = oci.File(suite["agnhost"].read_bytes(), 0o755)
    # Upstream's image has porter's TLS pair in its working directory (`/`), from the module's sources.
    porter = go_module_dir("k8s.io/kubernetes", f"v{version}") / "test" / "images" / "agnhost" / "porter"
    certs = {f"/localhost.{ext}": oci.File((porter / f"localhost.{ext}").read_bytes()) for ext in ("crt", "key")}
    coredns = oci.File((HOME / "bin" / "coredns").read_bytes(), 0o755)
    bash = cluster.with_libraries([Path("/bin/bash")])
    # The aggregator test's extension API server keeps its objects in an etcd beside it in the pod.
    etcd = cluster.with_libraries([Path("/usr/bin/etcd")])

    def update_demo(name: str) -> dict[str, oci.File]:
        # The kubectl Update Demo tests read each pod's data.json (naming its picture) through the API server's
        # proxy: upstream's page, from the module's test/images/<name>/html.
        html = porter.parents[1] / name / "html"
        return {f"/www/{f.name}": oci.File(f.read_bytes()) for f in html.iterdir()} | {
            "/www/index.html": oci.File(f"{name}\n".encode())}

    page = oci.File(b"<html><body><h1>It works!</h1></body></html>\n")
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    specs = {
        f"{E2E_REPO}/agnhost:2.53": oci.Image("", {**base, **tools, **certs, "/agnhost": agnhost,
                                                   "/agnhost-2": agnhost, "/coredns": coredns}, ["/agnhost"],
                                              user=ROOT, env=env, cmd=["pause"]),
        f"{E2E_REPO}/jessie-dnsutils:1.7": oci.Image("", {**base, **tools}, ["/bin/sh"], user=ROOT, env=env),
        f"{E2E_REPO}/busybox:1.36.1-1": oci.Image("", {**base, **bash}, ["/bin/sh"], user=ROOT, env=env,
                                                  links={"/bin/sh": "bash"}),
        **{f"{E2E_REPO}/{name}:1.7": oci.Image("", {**base, **update_demo(name)},
                                               ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"], user=ROOT,
                                               env=env) for name in ("nautilus", "kitten")},
        f"{E2E_REPO}/sample-apiserver:1.29.2": oci.Image(
            "", {**base, "/sample-apiserver": oci.File(suite["sample-apiserver"].read_bytes(), 0o755)},
            ["/sample-apiserver"], user=ROOT, env=env),
        # Setuid root, as upstream's: with allowPrivilegeEscalation the test sees it run as root.
        f"{E2E_REPO}/nonewprivs:1.3": oci.Image(
            "", {**base, "/usr/local/bin/nnp": oci.File(suite["nnp"].read_bytes(), 0o4755)}, ["/usr/local/bin/nnp"],
            user=ROOT, env=env),
        "registry.k8s.io/etcd:3.5.21-0": oci.Image("", {**base, **etcd}, ["/usr/local/bin/etcd"], user=ROOT, env=env,
                                                   links={"/usr/local/bin/etcd": "/usr/bin/etcd"}),
        "registry.k8s.io/pause:3.10": oci.Image("", {"/bin/busybox": busybox}, ["/bin/busybox", "sleep", "2147483647"],
                                                links={"/pause": "bin/busybox"}),
    }
    for tag in ("2.4.38-4", "2.4.39-4"):
        specs[f"{E2E_REPO}/httpd:{tag}"] = oci.Image(
            "", {**base, "/usr/local/apache2/htdocs/index.html": page},
            ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/usr/local/apache2/htdocs"], user=ROOT, env=env)
    for tag in ("1.14-4", "1.15-4"):
        specs[f"{E2E_REPO}/nginx:{tag}"] = oci.Image(
            "", {**base, "/usr/share/nginx/html/index.html": page},
            ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"], user=ROOT, env=env)
    archives = {}
    for ref, image in specs.items():
        image.ref = ref
        if "/etc/passwd" in image.files:
            # Debian's programs first (the host's bash, not busybox's applet of the same name), then the applets.
            image.links = {**{p: t for p, t in links.items() if p not in image.files and f"/usr{p}" not in image.files},
                           **image.links}
            if "/usr/bin/dig" in image.files:
                image.links.update(HOST_LINKS)
        archive = out / (re.sub(r"[^a-z0-9.-]+", "_", ref.split("/", 1)[1]) + ".tar")
        oci.build(image, archive)
        archives[ref] = archive
    return archives


def import_images(site: config.Site, archives: dict[str, Path]) -> None:
    """Each archive into every worker's containerd (ctr reads it from stdin over SSH), unless the worker already
    holds that image at the same digest (the archives are reproducible: a second run imports nothing)."""
    digests = {ref: oci.manifest_digest(archive) for ref, archive in archives.items()}
    for node in (n for n in site.nodes if n.role == "worker"):
        listed = subprocess.run([*ssh_args(site.ip(node)), "sudo ctr --namespace k8s.io images ls"],
                                capture_output=True, text=True, timeout=120, check=True).stdout
        held = {line.split()[0]: line.split()[2] for line in listed.splitlines()[1:] if line.strip()}
        for ref, archive in archives.items():
            if held.get(ref) == digests[ref]:
                continue
            with archive.open("rb") as f:
                r = subprocess.run([*ssh_args(site.ip(node)), "sudo ctr --namespace k8s.io images import -"],
                                   stdin=f, capture_output=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(f"{node.name}: importing {ref}: {r.stderr.decode()[-500:]}")


def uses_stand_in(testcase: ET.Element) -> list[str]:
    """The stand-in images a failed test's output names. agnhost itself is upstream's program, so only a missing
    command (one of its base image's) counts against its image."""
    text = " ".join([*(e.text or "" for e in testcase.iter()), *(e.get("message", "") for e in testcase.iter())])
    named = [name for name in STAND_INS if re.search(rf"/{re.escape(name)}:", text)]
    return sorted(n for n in named if n != "agnhost" or re.search(r"not found|no such file|busybox|invalid option",
                                                                 text, re.IGNORECASE))


def summarize(junit: Path) -> dict:
    cases = list(ET.parse(junit).getroot().iter("testcase"))  # noqa: S314 (our own run's report)
    conformance_cases = [c for c in cases if "[Conformance]" in c.get("name", "")]
    result = {"run": 0, "passed": 0, "skipped": 0, "failed": [], "failed_with_stand_in": []}
    for case in conformance_cases:
        status = case.get("status") or ("skipped" if case.find("skipped") is not None else
                                          "failed" if case.find("failure") is not None or
                                          case.find("error") is not None else "passed")
        if status == "skipped":
            result["skipped"] += 1
            continue
        result["run"] += 1
        if status == "passed":
            result["passed"] += 1
            continue
        images = uses_stand_in(case)
        entry = {"name": case.get("name"), "images": images,
                 "message": next(((e.get("message") or e.text or "")[:400] for e in case
                                  if e.tag in ("failure", "error")), "")}
        result["failed_with_stand_in" if images else "failed"].append(entry)
    return result


def run(site_name: str, focus: str, skip: str, nodes: int, timeout: str) -> Path:
    cfg = config.load()
    site = cfg.site(site_name)
    state = inventory.state_dir(cfg)
    kubeconfig = cluster.site_dir(site, state) / "kubeconfig" / "admin.conf"
    if not kubeconfig.exists():
        sys.exit(f"conformance: {kubeconfig} missing; bring the lab up first (`make lab`)")
    version = json.loads(subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "version", "-o", "json"],
                                        capture_output=True, text=True, check=True).stdout)["serverVersion"][
        "gitVersion"].lstrip("v")
    tool = conformance(version)
    t0 = time.monotonic()
    print(f"==> Kubernetes {version} conformance suite (e2e.test, ginkgo, agnhost) ...", flush=True)
    HOME.joinpath("logs").mkdir(parents=True, exist_ok=True)
    with (HOME / "logs" / f"build-conformance-{version}.log").open("w") as log:
        build(tool, log)
    suite = tool.binaries()
    report = REPORTS / time.strftime("%Y%m%dT%H%M%S")
    report.mkdir(parents=True)
    print(f"==> test images -> {site.name}'s workers ({time.monotonic() - t0:.0f}s)", flush=True)
    archives = images(suite, REPORTS / "images", version)
    import_images(site, archives)
    print(f"==> running [Conformance] tests matching {focus!r} ({time.monotonic() - t0:.0f}s); log: "
          f"{report / 'e2e.log'}", flush=True)
    # ginkgo runs the [Serial] tests after the others, one at a time.
    args = [str(suite["ginkgo"]), f"--procs={nodes}", f"--timeout={timeout}", f"--focus={focus}",
            *([f"--skip={skip}"] if skip else []), "--no-color", "--keep-going", str(suite["e2e.test"]), "--",
            f"--kubeconfig={kubeconfig}", "--provider=skeleton", f"--report-dir={report}",
            "--dump-logs-on-failure=false", f"--e2e-output-dir={report}"]
    with (report / "e2e.log").open("w") as log:
        proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=tool_env())
    junit = next(report.glob("junit*.xml"), None)
    if junit is None:
        sys.exit(f"conformance: no JUnit report in {report} (ginkgo exited {proc.returncode}; see e2e.log)")
    summary = {"kubernetes": version, "site": site.name, "focus": focus, "skip": skip,
               "seconds": round(time.monotonic() - t0), **summarize(junit), "stand_ins": STAND_INS}
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"conformance {version} on {site.name}: run {summary['run']}, passed {summary['passed']}, failed "
          f"{len(summary['failed'])} (+{len(summary['failed_with_stand_in'])} with a stand-in image), skipped "
          f"{summary['skipped']} in {summary['seconds']}s; report {junit}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", default="dc-astana")
    parser.add_argument("--focus", default=r"\[Conformance\]",
                        help="regex over test names; [Conformance] is always required")
    parser.add_argument("--skip", default="", help="regex of tests left out")
    parser.add_argument("--procs", type=int, default=2, help="tests run at once")
    parser.add_argument("--timeout", default="6h")
    args = parser.parse_args(argv)
    focus = (args.focus if "Conformance" in args.focus
             else rf"\[Conformance\].*{args.focus}|{args.focus}.*\[Conformance\]")
    run(args.site, focus, args.skip, args.procs, args.timeout)
    return 0


if __name__ == "__main__":
    shutil.which("kubectl") or sys.exit("conformance: kubectl not found (`make setup`)")
    sys.exit(main())
