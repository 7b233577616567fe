"""Shared helpers: render the chart with Helm's own Go code (helm-python-sdk)
and parse what it produced."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "dsr-orchestrator"
VALUES = HERE / "values"
REPO = HERE.parent.parent

RELEASE = "dsr"
NAMESPACE = "privacy"
FULLNAME = "dsr-dsr-orchestrator"
# The Kubernetes version the manifests are validated against: the newest
# kubernetes-validate ships (requirements.txt pins it).
K8S_VERSION = os.environ.get("DSR_K8S_VERSION", "1.37")

# The value sets every structural test runs on: name -> values file. The
# chart's bare defaults render nothing (they configure neither
# authentication nor the keys that seal personal data); "default" is them
# plus auth.existingSecret and encryption.existingSecret.
SCENARIOS: dict[str, str] = {
    "default": "defaults-with-auth.yaml",
    "sqlite-single": "sqlite-single.yaml",
    "postgres-3": "postgres-3.yaml",
    "autoscaling-netpol-monitor": "autoscaling-netpol-monitor.yaml",
    "tls-mtls-jwt": "tls-mtls-jwt.yaml",
    "trial-insecure": "trial-insecure.yaml",
    "compliance-retention": "compliance-retention.yaml",
    "federation-opendsr": "federation-opendsr.yaml",
}

# The least a value set needs to render: an auth file and the keys file.
REQUIRED: dict[str, Any] = {
    "auth": {"existingSecret": "dsr-auth"},
    "encryption": {"existingSecret": "dsr-keys"},
}


def load_values(name: str | None) -> dict[str, Any] | None:
    """A values file parsed by Helm's own parser (what `helm -f` does)."""
    if name is None:
        return None
    return helm.values_from_yaml((VALUES / name).read_text())


def merged(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Values layered as `helm -f a -f b` layers them: maps merge key by
    key, anything else is replaced by the later layer."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def required(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """`values` on top of REQUIRED, for tests about something else."""
    return merged(REQUIRED, values)


class Rendered:
    """The output of one `helm template`: manifests by template, parsed."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.notes = next((v for k, v in files.items() if k.endswith("NOTES.txt")), "")
        self.docs: list[dict[str, Any]] = []
        for path, text in sorted(files.items()):
            if path.endswith(".txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("__template__", path)
                    self.docs.append(doc)

    def manifests(self) -> list[dict[str, Any]]:
        """The objects without the test's bookkeeping key."""
        return [{k: v for k, v in d.items() if k != "__template__"} for d in self.docs]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        assert len(found) <= 1, f"more than one {kind}"
        return found[0] if found else None

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]

    @property
    def containers(self) -> list[dict[str, Any]]:
        spec = self.pod["spec"]
        return spec["containers"] + spec.get("initContainers", [])

    @property
    def config(self) -> dict[str, str]:
        return self.one("ConfigMap", f"{FULLNAME}-config")["data"]

    def configmap_mounts(self) -> dict[str, dict[str, str]]:
        """mountPath -> data of every rendered ConfigMap the container
        mounts (whole, as a directory)."""
        volumes = {v["name"]: v for v in self.pod["spec"]["volumes"]}
        out = {}
        for m in self.containers[0]["volumeMounts"]:
            cm = volumes[m["name"]].get("configMap")
            if cm:
                out[m["mountPath"].rstrip("/")] = self.one("ConfigMap", cm["name"])["data"]
        return out


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


@pytest.fixture(scope="session")
def render(chart):
    """render(values) -> Rendered; raises helm.HelmError when Helm refuses."""

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        return Rendered(chart.render(values=values, name=RELEASE, namespace=NAMESPACE))

    return _render


@pytest.fixture(scope="session")
def rendered(render) -> dict[str, Rendered]:
    """Every scenario, rendered once."""
    return {name: render(load_values(file)) for name, file in SCENARIOS.items()}
