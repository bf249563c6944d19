"""OCI image archives built from local files, for nodes that have no registry to pull from.

The lab is offline: the pod sandbox ("pause") image and the sample workload image are assembled here
from binaries already on the host and imported into each worker's containerd (`ctr images import`).
The archives are reproducible (fixed mtimes and owners), so the same inputs give the same digest and a
re-import changes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class File:
    content: bytes
    mode: int = 0o644


@dataclass
class Image:
    ref: str  # e.g. sovcloud.local/pause:1 (a name no registry answers for: nothing is ever pulled)
    files: dict[str, File]  # absolute path in the image -> content; parent directories are implied
    entrypoint: list[str]
    user: str = "65532:65532"  # non-root by default (PodSecurity restricted)
    env: list[str] = field(default_factory=lambda: ["PATH=/bin"])
    exposed_ports: list[int] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # absolute path in the image -> symlink target
    cmd: list[str] | None = None  # the entrypoint's default arguments


def _tar_layer(files: dict[str, File], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    links = links or {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(p) for path in [*files, *links] for p in Path(path.lstrip("/")).parents if str(p) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, f in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(f.content), f.mode, 0
            tar.addfile(info, io.BytesIO(f.content))
        for path, target in sorted(links.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
            tar.addfile(info)
    return buf.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def build(image: Image, out: Path) -> str:
    """Write `image` as an OCI image-layout tar archive at `out`; returns the manifest digest."""
    layer_tar = _tar_layer(image.files, image.links)
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": image.entrypoint, "User": image.user, "Env": image.env,
                   "ExposedPorts": {f"{p}/tcp": {} for p in image.exposed_ports},
                   **({"Cmd": image.cmd} if image.cmd else {})},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    layer_digest, _ = _blob(layer_gz)
    manifest = {
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": len(layer_gz)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    # The image under its tag and under `repo@digest`: a pod pinned by digest finds it without a registry
    # (containerd's CRI looks images up by that exact name and would otherwise try to pull).
    by_digest = f"{image.ref.rsplit(':', 1)[0]}@{manifest_digest}"
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
         "annotations": {"io.containerd.image.name": name}} for name in (image.ref, by_digest)]}
    entries = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
               "index.json": json.dumps(index, sort_keys=True).encode()}
    for digest, data in ((config_digest, config_bytes), (layer_digest, layer_gz), (manifest_digest, manifest_bytes)):
        entries[f"blobs/sha256/{digest.split(':')[1]}"] = data
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(entries.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)  # atomic: a reader never sees half an archive
    return manifest_digest


def manifest_digest(archive: Path) -> str:
    """The manifest digest of a single-image archive written by `build` (what a pod pins with `repo@digest`)."""
    with tarfile.open(archive) as tar:
        (digest,) = {m["digest"] for m in json.loads(tar.extractfile("index.json").read())["manifests"]}
    return digest
