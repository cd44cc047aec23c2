"""The cluster launcher YAML and KubeRay manifests parse and agree with the package (and their nodes
keep idle workers as a local Ray of vfmkd does)."""

from pathlib import Path

import ray
import yaml

from vfmkd_ray.config import load_config
from vfmkd_ray.ray_session import local_ray_system_config
from vfmkd_ray.submission import COMMANDS

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
GCS, DASHBOARD, CLIENT = 6379, 8265, 10001
# Every node keeps its idle workers as a local Ray of vfmkd does: "RAY_<setting>" -> value.
RAY_NODE_ENV = {f"RAY_{key}": str(value) for key, value in local_ray_system_config().items()}


def _containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_launcher_yaml_matches_the_package():
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    assert any(
        t["resources"].get("GPU", 0) >= 1 and t["max_workers"] > t["min_workers"]
        for t in cfg["available_node_types"].values()
    )
    start = " ".join(cfg["head_start_ray_commands"])
    for flag in (
        f"--port={GCS}",
        f"--dashboard-port={DASHBOARD}",
        f"--ray-client-server-port={CLIENT}",
        "--num-gpus=0",
    ):
        assert flag in start
    assert "RAY_AUTH_MODE=token" in start and all(
        "RAY_AUTH_MODE=token" in c for c in cfg["worker_start_ray_commands"][1:]
    )
    for command in [start, *cfg["worker_start_ray_commands"][1:]]:
        assert all(f"{name}={value} " in command for name, value in RAY_NODE_ENV.items()), command
    assert any("pip install -e" in c for c in cfg["setup_commands"])


def test_kuberay_manifests_match_the_package():
    for name in ("raycluster.yaml", "rayjob.yaml"):
        manifest = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
        spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
        assert spec["rayVersion"] == ray.__version__
        assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
        assert all(int(g["rayStartParams"]["num-gpus"]) >= 1 for g in spec["workerGroupSpecs"])
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {p["containerPort"] for p in head["ports"]} == {GCS, DASHBOARD, CLIENT}
        for container in _containers(manifest):
            env = {e["name"]: e for e in container["env"]}
            assert (
                env["RAY_AUTH_MODE"]["value"] == "token"
                and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
            )
            for name, value in RAY_NODE_ENV.items():
                assert env.get(name, {}).get("value") == value, f"{name} on {container['name']}"
            assert {"secretRef": {"name": "vfmkd-s3"}} in container["envFrom"], (
                "S3 credentials on every container"
            )
            assert container["image"].endswith(f"ray{ray.__version__}")
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    words = job["spec"]["entrypoint"].split()
    assert words[:2] == ["python", "-m"] and words[2].removeprefix("jobs.") in COMMANDS
    assert (REPO / (words[2].replace(".", "/") + ".py")).is_file()
    load_config(REPO / words[3], words[4:])  # the config and overrides it names validate


def test_dockerfile_and_local_script_use_the_pinned_ray():
    assert f"FROM rayproject/ray:{ray.__version__}-" in (CLUSTER / "Dockerfile").read_text()
    script = (CLUSTER / "local.sh").read_text()
    assert "--node-ip-address=127.0.0.1" in script and "--dashboard-host=127.0.0.1" in script
    assert 'export PATH="$(dirname "$RAY"):$PATH"' in script, "jobs must find the environment's python"
    assert all(f"export {name}={value}\n" in script for name, value in RAY_NODE_ENV.items())
