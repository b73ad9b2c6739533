"""Building the sandbox images (`palaestra sandbox build`).

Two ways to the same images, behind one function:

* ``dockerfile``: where a registry answers, ``FROM python:3.12-slim`` (+ g++ for ``cpp``).
* ``debootstrap``: offline (CI, machines without a registry), a Debian ``minbase`` root file system made
  with ``debootstrap`` from the APT mirror the machine already uses, then ``docker import``. The root file
  system is cached as a tarball so a rebuild after ``docker system prune`` takes seconds.

``auto`` (the default) uses a Dockerfile when the base image is present or can be pulled, else debootstrap.
An image that already exists is left alone unless ``force`` is given.

    python -m palaestra.sandbox.images build [--profile python] [--source auto|dockerfile|debootstrap]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("palaestra.sandbox.images")

IMAGE_VERSION = "2"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
BASE_IMAGE = "python:3.12-slim"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageSpec:
    profile: str
    tag: str
    # for debootstrap --include: `python3` rather than `python3-minimal`, whose stdlib lacks json and unittest
    debian_packages: tuple[str, ...]
    apt_packages: tuple[str, ...]  # added on top of the Dockerfile base


IMAGES: dict[str, ImageSpec] = {
    "python": ImageSpec("python", f"palaestra/sandbox-python:{IMAGE_VERSION}", ("python3",), ()),
    "cpp": ImageSpec("cpp", f"palaestra/sandbox-cpp:{IMAGE_VERSION}", ("python3", "g++"), ("g++",)),
}


def image_for(profile: str) -> str:
    return IMAGES[profile].tag


def dockerfile_for(spec: ImageSpec) -> str:
    lines = [f"FROM {BASE_IMAGE}"]
    if spec.apt_packages:
        packages = " ".join(spec.apt_packages)
        lines.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            f"{packages} && rm -rf /var/lib/apt/lists/*"
        )
    # python:3.12-slim has python3 in /usr/local/bin; the runner and programs call `python3`.
    lines += [
        "RUN mkdir -p /workspace",
        "WORKDIR /workspace",
        f'LABEL org.palaestra.profile="{spec.profile}"',
    ]
    return "\n".join(lines) + "\n"


def configured_mirror(sources: Path = DEBIAN_SOURCES) -> str:
    """The first Debian mirror in the machine's deb822 sources for the main archive, else deb.debian.org."""
    try:
        text = sources.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for stanza in text.split("\n\n"):
        uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
        suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
        if uris and suites and SUITE in suites.group(1).split():
            return uris.group(1)
    return DEFAULT_MIRROR


def _docker_client() -> Any:
    import docker

    return docker.from_env(timeout=600)


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def registry_usable(client: Any) -> bool:
    """Whether the Dockerfile base image is here or can be pulled."""
    import docker.errors

    if image_exists(client, BASE_IMAGE):
        return True
    try:
        client.images.pull(BASE_IMAGE)
        return True
    except docker.errors.DockerException as exc:
        log.info("cannot pull %s (%s): building from debootstrap", BASE_IMAGE, str(exc).splitlines()[0])
        return False


def build_from_dockerfile(client: Any, spec: ImageSpec) -> None:
    data = dockerfile_for(spec).encode()
    client.images.build(fileobj=io.BytesIO(data), tag=spec.tag, rm=True, forcerm=True)


def _debootstrap_tarball(spec: ImageSpec, cache_dir: Path, mirror: str) -> Path:
    """A cached tarball of the profile's root file system, made with debootstrap when missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"{spec.profile}-{SUITE}-{IMAGE_VERSION}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f"{spec.profile}-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        include = ",".join(spec.debian_packages)
        cmd = ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(rootfs), mirror]
        log.info("building %s root file system: %s", spec.profile, " ".join(cmd))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        _slim_rootfs(rootfs)
        (rootfs / "workspace").mkdir(exist_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def _slim_rootfs(rootfs: Path) -> None:
    for rel in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
    ):
        target = rootfs / rel
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir(parents=True)


def build_from_debootstrap(client: Any, spec: ImageSpec, cache_dir: Path, mirror: str) -> None:
    tarball = _debootstrap_tarball(spec, cache_dir, mirror)
    changes = [
        f"ENV {PATH_ENV}",
        "WORKDIR /workspace",
        f'LABEL org.palaestra.profile="{spec.profile}"',
    ]
    repository, tag = spec.tag.rsplit(":", 1)
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=changes)


def build_images(
    profiles: Iterable[str] | None = None,
    *,
    source: str = "auto",
    force: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    client: Any = None,
) -> dict[str, str]:
    """Build the images of the given profiles (all by default); returns profile -> image tag."""
    if source not in ("auto", "dockerfile", "debootstrap"):
        raise ValueError(f"unknown image source {source!r}")
    client = client or _docker_client()
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "palaestra-rootfs-cache"
    mirror = mirror or configured_mirror()
    built: dict[str, str] = {}
    use_dockerfile: bool | None = None
    for name in profiles or IMAGES:
        spec = IMAGES[name]
        if not force and image_exists(client, spec.tag):
            log.info("image %s exists", spec.tag)
            built[name] = spec.tag
            continue
        if use_dockerfile is None:
            use_dockerfile = source == "dockerfile" or (source == "auto" and registry_usable(client))
        if use_dockerfile:
            build_from_dockerfile(client, spec)
        else:
            build_from_debootstrap(client, spec, cache, mirror)
        log.info("built %s", spec.tag)
        built[name] = spec.tag
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m palaestra.sandbox.images")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the sandbox profile images")
    build.add_argument("--profile", action="append", choices=sorted(IMAGES), help="default: all")
    build.add_argument("--source", default="auto", choices=["auto", "dockerfile", "debootstrap"])
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.add_argument("--cache-dir", help="where debootstrap root file systems are cached")
    build.add_argument("--mirror", help="Debian mirror (default: the machine's configured one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = build_images(
        args.profile, source=args.source, force=args.force, cache_dir=args.cache_dir, mirror=args.mirror
    )
    for profile, tag in built.items():
        print(f"{profile}: {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
