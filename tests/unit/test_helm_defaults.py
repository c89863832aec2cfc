"""The chart is safe by default (issue 14), checked on what the real Helm 3 and 4 render.

- Builds: a rootless BuildKit sidecar, never privileged, never root, no entitlements;
  privileged dind only as an explicit, warned opt-in; a dedicated tainted build pool.
- Redis: never without a password; protected mode on; the bot and workers use it.
- Traffic: NetworkPolicies on every pod both ways; egress only to DNS, Redis and the
  allowed destinations, and never to the cloud metadata addresses, which is checked by
  evaluating the rendered policies against addresses, as a CNI would.
- Images: every third-party image pinned by digest (tag kept for humans), in the chart and
  in the Dockerfile.
- Disk: ephemeral-storage requests and limits everywhere, every emptyDir bounded.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit import test_helm_chart as chart
from tests.unit.test_helm_chart import (
    CHART,
    DIND,
    EVERYTHING_ON,
    EXTERNAL_DOCKER,
    EXTERNAL_REDIS,
    FULL,
    REPO,
    SOCKET_MODE,
    THREE_PLATFORMS,
    Helm,
    bot_spec,
    container,
    containers,
    env_of,
    merged,
    named,
    of_kind,
    pod_specs,
    secret_ref,
    selects,
    workers,
)

# The chart tests' fixtures: Helm 3 and 4, and a chart copy that renders NOTES.txt.
helm = chart.helm
notes_chart = chart.notes_chart

CI_VALUES = REPO / "helm" / "ci-values"
DEFAULT_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "socket-mode": SOCKET_MODE,
    "dind": DIND,
    "external-docker": EXTERNAL_DOCKER,
    "external-redis": EXTERNAL_REDIS,
    "everything-on": EVERYTHING_ON,
    "three-platforms": THREE_PLATFORMS,
    # The realistic sets scripts/scan runs checkov over.
    **{f"ci-{p.stem}": yaml.safe_load(p.read_text()) for p in sorted(CI_VALUES.glob("*.yaml"))},
}
DIGEST_REF = re.compile(r"^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")
METADATA = ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")


# ---------------------------------------------------------------- 1. builds


def test_default_builder_is_rootless_buildkit_and_nothing_is_privileged(helm: Helm) -> None:
    docs = helm.template({})
    for where, spec in pod_specs(docs):
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc.get("privileged") is False, (where, c["name"])
            assert sc["runAsUser"] > 0 and sc["runAsNonRoot"] is True, (where, c["name"])
            assert not sc.get("capabilities", {}).get("add"), (where, c["name"])
    for worker in workers(docs):
        template = worker["spec"]["template"]
        spec = template["spec"]
        assert [c["name"] for c in spec["containers"]] == ["worker", "buildkitd"]
        buildkitd, main = container(spec, "buildkitd"), container(spec, "worker")
        assert re.fullmatch(r"docker\.io/moby/buildkit:v[\d.]+-rootless@sha256:[0-9a-f]{64}",
                            buildkitd["image"])  # fmt: skip
        # The socket is the one way in: no port, no TCP address.
        assert "ports" not in buildkitd
        addresses = [
            a for i, a in enumerate(buildkitd["args"]) if buildkitd["args"][i - 1] == "--addr"
        ]
        assert addresses == ["unix:///run/buildkit/buildkitd.sock"]
        assert "--oci-worker-no-process-sandbox" in buildkitd["args"]
        # The worker builds through Buildx's remote driver on that socket, not a Docker daemon.
        assert main["args"][main["args"].index("--builder") + 1] == "aibrix"
        assert "DOCKER_HOST" not in env_of(main)
        (init,) = spec["initContainers"]
        assert "--driver remote unix:///run/buildkit/buildkitd.sock" in init["args"][0]
        assert "--name aibrix" in init["args"][0]
        shared = {m["name"] for m in main["volumeMounts"]} & {
            m["name"] for m in buildkitd["volumeMounts"]
        }
        assert shared == {"buildkit-socket"}
        (socket,) = [v for v in spec["volumes"] if v["name"] == "buildkit-socket"]
        assert socket["emptyDir"]["medium"] == "Memory"
        # The non-root worker reaches the socket through the image user's group.
        assert 1000 in spec["securityContext"]["supplementalGroups"]
        annotations = template["metadata"]["annotations"]
        assert annotations["container.apparmor.security.beta.kubernetes.io/buildkitd"] == (
            "unconfined"
        )


@pytest.mark.parametrize("flag", ["--allow-insecure-entitlement=security.insecure",
                                  "--allow-insecure-entitlement", "--insecure-entitlements"])  # fmt: skip
@pytest.mark.parametrize("mode", ["buildkit", "dind"])
def test_build_steps_never_get_entitlements(helm: Helm, flag: str, mode: str) -> None:
    error = helm.fails({"docker": {"mode": mode, mode: {"extraArgs": [flag]}}})
    assert "never get entitlements" in error
    docs = helm.template({"registry": {"insecureRegistries": ["registry.lab:5000"]}})
    toml = named(docs, "ConfigMap", f"{FULL}-buildkitd")["data"]["buildkitd.toml"]
    assert "entitlement" not in toml
    for worker in workers(docs):
        args = container(worker["spec"]["template"]["spec"], "buildkitd")["args"]
        assert not [a for a in args if "entitlement" in a]


def test_privileged_dind_is_an_opt_in_the_notes_warn_about(helm: Helm, notes_chart: Path) -> None:
    def notes(values: dict[str, Any]) -> str:
        (doc,) = of_kind(helm.template(values, chart=notes_chart), "Notes")
        return str(doc["text"])

    assert "PRIVILEGED" in notes(DIND) and "root on the node" in notes(DIND)
    default = notes({})
    assert "rootless BuildKit" in default
    assert "PRIVILEGED" not in default
    docs = helm.template(DIND)
    for worker in workers(docs):
        assert container(worker["spec"]["template"]["spec"], "dind")["securityContext"][
            "privileged"
        ]
    assert "mode" in helm.fails({"docker": {"mode": "rootful"}})
    # The bot image by tag only, and NetworkPolicies turned off, are said too.
    assert "image.digest" in default
    assert "networkPolicy.enabled=false" in notes({"networkPolicy": {"enabled": False}})


def test_workers_can_be_pinned_to_a_dedicated_tainted_pool(helm: Helm) -> None:
    pool = {"enabled": True, "key": "pool.example.com/builds", "value": "yes"}
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [
            {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}  # fmt: skip
    docs = helm.template(merged(THREE_PLATFORMS, {"workers": {
        "dedicatedPool": pool, "affinity": affinity}}))  # fmt: skip
    toleration = {"key": "pool.example.com/builds", "operator": "Equal", "value": "yes",
                  "effect": "NoSchedule"}  # fmt: skip
    assert len(workers(docs)) == 3
    for worker in workers(docs):
        spec = worker["spec"]["template"]["spec"]
        assert spec["nodeSelector"]["pool.example.com/builds"] == "yes"
        assert toleration in spec["tolerations"]
        assert spec["affinity"] == affinity
        assert spec["nodeSelector"]["kubernetes.io/arch"] in ("amd64", "arm64", "arm")
    arm = named(docs, "Deployment", f"{FULL}-worker-arm-v7")["spec"]["template"]["spec"]
    assert any(t.get("value") == "arm" for t in arm["tolerations"]), "its own toleration stays"
    # Only the workers go there: nothing else tolerates the pool's taint.
    for where, spec in pod_specs(docs):
        if "worker" not in where:
            assert toleration not in spec.get("tolerations", []), where
    off = helm.template({})
    for worker in workers(off):
        assert "tolerations" not in worker["spec"]["template"]["spec"]


# ---------------------------------------------------------------- 2. Redis


def test_in_release_redis_always_has_a_password_and_protected_mode(helm: Helm) -> None:
    error = helm.fails({"redis": {"auth": {"existingSecret": ""}}})
    assert "redis.auth.existingSecret is required" in error
    docs = helm.template({})
    redis = container(named(docs, "StatefulSet", f"{FULL}-redis")["spec"]["template"]["spec"],
                      "redis")  # fmt: skip
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--protected-mode") + 1] == "yes"
    assert args.count("--protected-mode") == 1
    assert redis["command"] == ["redis-server"], "not the image's entrypoint, which turns it off"
    assert secret_ref(env_of(redis), "REDIS_PASSWORD") == ("aibrix-redis-auth", "redis-password")
    for c in [container(bot_spec(docs), "bot")] + [
        container(w["spec"]["template"]["spec"], "worker") for w in workers(docs)
    ]:
        env = env_of(c)
        assert secret_ref(env, "REDIS_PASSWORD") == ("aibrix-redis-auth", "redis-password")
        assert env["REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{FULL}-redis:6379/0"
    # An external Redis brings its own URL (with its password) and needs no auth Secret.
    external = helm.template(merged(EXTERNAL_REDIS, {"redis": {"auth": {"existingSecret": ""}}}))
    assert not of_kind(external, "StatefulSet")


# ---------------------------------------------------------------- 3. traffic


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc["spec"]["template"]["metadata"][
                "labels"
            ]
        elif doc["kind"] == "Pod":
            out[f"Pod/{doc['metadata']['name']}"] = doc["metadata"]["labels"]
    return out


def _policies_for(docs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p for p in of_kind(docs, "NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
    ]  # fmt: skip


def egress_allows(policies: list[dict[str, Any]], address: str, port: int) -> bool:
    """Whether any ipBlock egress rule of `policies` lets `address:port` (TCP) out, as a CNI
    evaluates it: cidr contains it, no except does, and the port is listed (or none are)."""
    ip = ipaddress.ip_address(address)
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for peer in rule.get("to", [{"ipBlock": {"cidr": "0.0.0.0/0"}},
                                        {"ipBlock": {"cidr": "::/0"}}]):  # fmt: skip
                block = peer.get("ipBlock")
                if not block:
                    continue  # a pod/namespace selector: in-cluster pods only
                network = ipaddress.ip_network(block["cidr"])
                if ip.version != network.version or ip not in network:
                    continue
                if not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])
                           if ipaddress.ip_network(e).version == ip.version):  # fmt: skip
                    return True
    return False


@pytest.mark.parametrize("name", sorted(DEFAULT_SETS))
def test_every_pod_has_network_policies_both_ways(helm: Helm, name: str) -> None:
    docs = helm.template(DEFAULT_SETS[name])
    for where, labels in _pods(docs).items():
        policies = _policies_for(docs, labels)
        assert policies, f"{where} has no NetworkPolicy"
        types = {t for p in policies for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, where


@pytest.mark.parametrize("name", sorted(DEFAULT_SETS))
def test_egress_never_reaches_metadata_or_private_addresses(helm: Helm, name: str) -> None:
    docs = helm.template(DEFAULT_SETS[name])
    egress = DEFAULT_SETS[name].get("networkPolicy", {}).get("egress", {})
    public = egress.get("public", {}).get("enabled", True)
    for where, labels in _pods(docs).items():
        policies = _policies_for(docs, labels)
        for address in METADATA:
            for port in (80, 443, 53):
                assert not egress_allows(policies, address, port), (where, address, port)
        # The Kubernetes API's usual ClusterIP and in-cluster ranges stay out of reach.
        for address in ("10.96.0.1", "172.20.0.1", "192.168.1.10", "100.64.0.1", "127.0.0.1"):
            assert not egress_allows(policies, address, 443), (where, address)
        app = labels["app.kubernetes.io/component"] in ("bot", "worker")
        # Slack's API, a public registry or git host: HTTPS only, and only for the app pods.
        assert egress_allows(policies, "52.85.12.34", 443) is app, where
        if public:  # the chart's public rule covers IPv6 too
            assert egress_allows(policies, "2600:1f18::1", 443) is app, where
        assert not egress_allows(policies, "52.85.12.34", 80), where
        assert not egress_allows(policies, "52.85.12.34", 6379), where


def test_egress_rules_per_pod(helm: Helm) -> None:
    docs = helm.template({})
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {f"{FULL}-{n}" for n in ("bot", "worker", "redis", "test")}
    assert policies[f"{FULL}-redis"]["egress"] == [], "Redis reaches no one"
    assert policies[f"{FULL}-test"]["ingress"] == []
    for name in ("bot", "worker"):
        egress = policies[f"{FULL}-{name}"]["egress"]
        dns, redis, public = egress
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        assert (
            redis["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
        )
        assert redis["ports"] == [{"port": 6379, "protocol": "TCP"}]
        assert public["ports"] == [{"port": 443, "protocol": "TCP"}]
    # The build steps share the worker pod's network namespace, so this policy is theirs.
    for worker in workers(docs):
        spec = worker["spec"]["template"]["spec"]
        assert "buildkitd" in [c["name"] for c in spec["containers"]]
        assert not spec.get("hostNetwork")
    # Redis still admits only the release's bot and workers.
    (rule,) = policies[f"{FULL}-redis"]["ingress"]
    (peer,) = rule["from"]
    components = {e["key"]: e["values"] for e in peer["podSelector"]["matchExpressions"]}
    assert components["app.kubernetes.io/component"] == ["bot", "worker"]


def test_registries_git_hosts_and_external_redis_are_added_by_address(helm: Helm) -> None:
    values = merged(EXTERNAL_REDIS, {"networkPolicy": {"egress": {
        "public": {"enabled": False},
        "registries": [{"cidr": "10.20.0.15/32", "ports": [5000]},
                       {"cidr": "128.0.0.0/1", "ports": [443]}],
        "gitHosts": [{"cidr": "2001:db8::/32", "ports": [22]}],
        "redis": [{"cidr": "10.20.0.20/32", "ports": [6379]}]}}})  # fmt: skip
    docs = helm.template(values)
    policies = [
        p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-worker")
    ]
    assert egress_allows(policies, "10.20.0.15", 5000)
    assert not egress_allows(policies, "10.20.0.16", 5000)
    assert egress_allows(policies, "2001:db8::5", 22)
    assert egress_allows(policies, "10.20.0.20", 6379)
    assert egress_allows(policies, "200.1.2.3", 443)
    assert not egress_allows(policies, "52.85.12.34", 443), "public egress turned off"
    # A range around the metadata range gets it taken out; one inside it is refused.
    assert not egress_allows(policies, "169.254.169.254", 443)
    for cidr in ("169.254.169.254/32", "169.254.0.0/16", "fd00:ec2::/32"):
        error = helm.fails({"networkPolicy": {"egress": {"gitHosts": [
            {"cidr": cidr, "ports": [443]}]}}})  # fmt: skip
        assert "metadata" in error, cidr


# ---------------------------------------------------------------- 4. images


def _images(docs: list[dict[str, Any]]) -> list[str]:
    return [c["image"] for _, spec in pod_specs(docs) for c in containers(spec)]


@pytest.mark.parametrize("name", sorted(DEFAULT_SETS))
def test_every_third_party_image_is_pinned_by_digest(helm: Helm, name: str) -> None:
    values = DEFAULT_SETS[name]
    docs = helm.template(values)
    own = values.get("image", {}).get("repository", "aibrix/aibrix-release-bot")
    for image in _images(docs):
        if image.startswith(own + ":") or image.startswith(own + "@"):
            # The image you build: its digest is yours to set (NOTES.txt says so).
            if values.get("image", {}).get("digest"):
                assert re.fullmatch(rf"{re.escape(own)}(:[^@]+)?@sha256:[0-9a-f]{{64}}", image)
            continue
        assert DIGEST_REF.match(image), f"{name}: {image} is not REPO:TAG@sha256:DIGEST"


def test_the_schema_requires_digests_of_third_party_images(helm: Helm) -> None:
    for values in (
        {"redis": {"image": {"digest": ""}}},
        {"docker": {"buildkit": {"image": {"digest": ""}}}},
        {"docker": {"dind": {"image": {"digest": "latest"}}}},
        {"image": {"digest": "sha256:short"}},
    ):
        assert "digest" in helm.fails(values), values
    pinned = helm.template({"image": {"tag": "0.1.0", "digest": "sha256:" + "cd" * 32}})
    assert set(_images(pinned)) >= {"aibrix/aibrix-release-bot:0.1.0@sha256:" + "cd" * 32}


def test_the_dockerfile_pins_its_images_by_digest() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", dockerfile, re.M))
    for name in ("BASE_IMAGE", "DOCKER_CLI_IMAGE"):
        assert DIGEST_REF.match(args[name]), f"{name}={args[name]}"
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    for image in re.findall(r"^FROM (\S+)", dockerfile, re.M):
        # Every FROM names a pinned ARG or an earlier stage, never a bare tag.
        assert (
            image in ("${BASE_IMAGE}", "${DOCKER_CLI_IMAGE}")
            or image in stages
            or (image.startswith("docker-cli-${"))
        ), image


# ---------------------------------------------------------------- 5. disk


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip


def quantity(text: Any) -> int:
    number, unit = re.fullmatch(r"(\d+)([kMGT]i?|)", str(text)).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


@pytest.mark.parametrize("name", sorted(DEFAULT_SETS))
def test_disk_is_declared_and_bounded(helm: Helm, name: str) -> None:
    docs = helm.template(DEFAULT_SETS[name])
    for where, spec in pod_specs(docs):
        limits = 0
        for c in containers(spec):
            resources = c["resources"]
            assert resources["requests"].get("ephemeral-storage"), (where, c["name"])
            assert resources["limits"].get("ephemeral-storage"), (where, c["name"])
            if c in spec["containers"]:
                limits += quantity(resources["limits"]["ephemeral-storage"])
        on_disk = 0
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), (where, volume["name"])
                if volume["emptyDir"].get("medium") != "Memory":
                    on_disk += quantity(volume["emptyDir"]["sizeLimit"])
        # The kubelet evicts a pod whose emptyDirs and logs pass the sum of its limits: the
        # limits must leave room for full emptyDirs.
        assert on_disk < limits, (where, on_disk, limits)


def test_chart_has_no_unbounded_emptydir_in_its_templates() -> None:
    for template in (CHART / "templates").glob("*.yaml"):
        assert "emptyDir: {}" not in template.read_text(), template.name


# ---------------------------------------------------------------- 7. the scan


def test_the_realistic_value_sets_render_valid_kubernetes(helm: Helm) -> None:
    names = [n for n in DEFAULT_SETS if n.startswith("ci-")]
    assert len(names) >= 2, "scripts/scan needs two realistic value sets"
    for name in names:
        for doc in helm.template(DEFAULT_SETS[name]):
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_every_accepted_finding_has_a_reason_and_is_documented() -> None:
    accepted = (REPO / "helm" / "checkov-accepted.txt").read_text().splitlines()
    docs = (REPO / "docs" / "deploy.md").read_text()
    table = docs[docs.index("### Accepted scanner findings") :]
    entries = [line.split(None, 3) for line in accepted if line.strip() and line[0] != "#"]
    assert entries
    for entry in entries:
        check, scope, _resource, reason = entry
        assert re.fullmatch(r"CKV_(K8S|DOCKER)_\d+", check), entry
        assert scope == "dockerfile" or scope.startswith("k8s:"), entry
        assert len(reason.split()) >= 8, f"{check}: say why it is accepted"
        assert check in table, f"{check} is accepted but not explained in docs/deploy.md"
    scan = (REPO / "scripts" / "scan").read_text()
    assert "helm/ci-values" in scan and "checkov-accepted.txt" in scan
    assert "scripts/scan" in (REPO / "scripts" / "test").read_text()  # .ci/run runs it
    assert "scripts/scan" in (REPO / "README.md").read_text()
