"""What goes into the images the workers import (lab/cluster.py): a dynamically linked program comes with every
library it loads, from the packages unpacked for it first, else from the host (Debian 12, as the nodes)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from lab import cluster


def test_a_program_comes_with_the_loader_and_every_library_it_loads():
    files = cluster.with_libraries([Path("/bin/ls")])
    out = subprocess.run(["ldd", "/bin/ls"], capture_output=True, text=True, check=True).stdout
    wanted = {p for p in out.split() if p.startswith("/")}
    assert wanted and wanted | {"/bin/ls"} == set(files)
    assert any("ld-linux" in p for p in files) and any("libc.so" in p for p in files)
    assert files["/bin/ls"].content == Path("/bin/ls").read_bytes()


def test_files_unpacked_under_a_root_keep_their_path_below_it(tmp_path):
    # A package's program and its own library, unpacked under tmp_path: they land at their packaged paths.
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    shutil.copy("/bin/ls", tmp_path / "usr/bin/demo")
    lib = next(p for p in cluster.with_libraries([Path("/bin/ls")]) if "libselinux" in p or "libc.so" in p)
    shutil.copy(Path(lib).resolve(), tmp_path / "usr/lib/x86_64-linux-gnu" / Path(lib).name)
    files = cluster.with_libraries([tmp_path / "usr/bin/demo"], tmp_path)
    assert "/usr/bin/demo" in files and f"/usr/lib/x86_64-linux-gnu/{Path(lib).name}" in files
    assert not any(str(tmp_path) in p for p in files)


def test_a_library_the_host_lacks_is_named(monkeypatch):
    out = "\tlibpq.so.5 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6\n"
    ldd = subprocess.CompletedProcess([], 0, out)
    monkeypatch.setattr(cluster.subprocess, "run", lambda *a, **kw: ldd)
    with pytest.raises(FileNotFoundError, match="libpq.so.5 => not found"):
        cluster.with_libraries([Path("/usr/bin/psql")])


@pytest.mark.tools
def test_a_served_page_stops_on_sigterm_where_the_bare_server_waits_for_sigkill(tmp_path):
    """The sample images' entrypoint as a container's PID 1 exits on SIGTERM (status 0): a pod deletion does not
    wait out its grace period. Control: busybox httpd itself as PID 1 ignores SIGTERM and ends by SIGKILL (137)."""
    from lab.podman import podman

    root = tmp_path / "rootfs"  # what the images hold: the static busybox and a page
    (root / "bin").mkdir(parents=True)
    (root / "www").mkdir()
    busybox = cluster.static_busybox()
    (root / "bin" / "busybox").write_bytes(busybox.content)
    (root / "bin" / "busybox").chmod(0o755)
    (root / "www" / "index.html").write_text("page\n")
    codes = {}
    for name, entrypoint in (("trapped", cluster.until_sigterm("/bin/busybox httpd -f -p 8080 -h /www")),
                             ("bare", ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])):
        container = f"sovcloud-test-sigterm-{name}"
        try:
            podman("run", "-d", "--name", container, "--network", "none", "--rootfs", str(root), *entrypoint)
            podman("stop", "-t", "3", container)  # SIGTERM, then SIGKILL after 3 s
            codes[name] = int(podman("inspect", "-f", "{{.State.ExitCode}}", container).strip())
        finally:
            podman("rm", "-f", container, check=False)
    assert codes == {"trapped": 0, "bare": 137}, codes
