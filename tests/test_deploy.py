"""Deployment artefacts that can be checked offline: the server image's build context (a real wheel made by
scripts/build_server_image.sh) and the KubeRay manifest (its server configuration loads; names agree).
Building the image itself needs the base image from a registry, and KubeRay needs Kubernetes: not here."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from palaestra.server.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_build_script_makes_a_context_with_the_palaestra_wheel(tmp_path: Path) -> None:
    context = tmp_path / "context"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/build_server_image.sh"), "--context-only", str(context)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = (context / "dist").glob("palaestra-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("cluster/api.py", "cluster/replica.py", "cluster/directory.py", "agents/multi.py"):
        assert f"palaestra/{module}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "palaestra = palaestra.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    dockerfile = (context / "Dockerfile").read_text()
    assert "COPY dist/" in dockerfile and "[ray,docker]" in dockerfile


def test_kuberay_manifest_agrees_with_the_image_and_loads_its_config(tmp_path: Path) -> None:
    cluster, config_map = yaml.safe_load_all((ROOT / "deploy/kuberay-raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and config_map["kind"] == "ConfigMap"
    script = (ROOT / "scripts/build_server_image.sh").read_text()
    tag = re.search(r'^TAG="([^"]+)"', script, re.M)
    base = re.search(
        r"^ARG BASE=rayproject/ray:([0-9.]+)-", (ROOT / "deploy/server.Dockerfile").read_text(), re.M
    )
    assert tag is not None and base is not None
    pods = [cluster["spec"]["headGroupSpec"]] + cluster["spec"]["workerGroupSpecs"]
    for group in pods:
        [container] = group["template"]["spec"]["containers"]
        assert container["image"] == tag.group(1)  # the image the script builds
    assert cluster["spec"]["rayVersion"] == base.group(1)  # the Ray in the image
    toml = tmp_path / "palaestra.toml"
    toml.write_text(config_map["data"]["palaestra.toml"])
    config = load_config(toml, environ={"PALAESTRA_TRAINER_TOKEN": "secret"})
    assert config.principals["trainer"].token == "secret"
    assert config.sandbox["backend"] == "local"
