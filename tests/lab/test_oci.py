"""OCI image archives built from local files (lab/oci.py): a valid image layout, reproducible."""

import hashlib
import json
import tarfile

from lab import oci


def _image(**kw) -> oci.Image:
    return oci.Image(ref="sovcloud.local/demo:1", entrypoint=["/bin/demo"],
                     files={"/bin/demo": oci.File(b"#!demo\n", 0o755), "/www/index.html": oci.File(b"hi\n")}, **kw)


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_archive_is_an_oci_layout_whose_blobs_match_their_digests(tmp_path):
    digest = oci.build(_image(exposed_ports=[8080]), tmp_path / "demo.tar")
    assert oci.manifest_digest(tmp_path / "demo.tar") == digest
    files = _members(tmp_path / "demo.tar")
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    entries = json.loads(files["index.json"])["manifests"]
    assert {e["digest"] for e in entries} == {digest}
    # Named by tag and by digest: a pod pinned to repo@digest finds it in containerd without a registry.
    assert {e["annotations"]["io.containerd.image.name"] for e in entries} == {
        "sovcloud.local/demo:1", f"sovcloud.local/demo@{digest}"}
    manifest = json.loads(files[f"blobs/sha256/{digest[7:]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["config"]["User"] == "65532:65532" and config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    (layer,) = manifest["layers"]
    import gzip
    import io

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(files[f"blobs/sha256/{layer['digest'][7:]}"]))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/demo"].mode == 0o755 and members["www"].isdir()
    assert config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(gzip.decompress(files[f"blobs/sha256/{layer['digest'][7:]}"])).hexdigest()]


def test_same_inputs_same_digest_and_any_change_a_new_one(tmp_path):
    a = oci.build(_image(), tmp_path / "a.tar")
    assert oci.build(_image(), tmp_path / "b.tar") == a
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert oci.build(_image(user="0:0"), tmp_path / "c.tar") != a


def test_links_and_default_arguments(tmp_path):
    """A shell image: applets as symlinks to one binary, the entrypoint's default arguments (Cmd) in the config."""
    import gzip
    import io

    digest = oci.build(_image(links={"/bin/sh": "demo"}, cmd=["pause"]), tmp_path / "demo.tar")
    files = _members(tmp_path / "demo.tar")
    manifest = json.loads(files[f"blobs/sha256/{digest[7:]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["config"]["Cmd"] == ["pause"]
    (layer,) = manifest["layers"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(files[f"blobs/sha256/{layer['digest'][7:]}"]))) as tar:
        link = tar.getmember("bin/sh")
    assert link.issym() and link.linkname == "demo"
