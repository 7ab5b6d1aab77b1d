"""The LeaderWorkerSet controller's local setup: where it is cached, how it is configured, and
webhooks that only ever see LeaderWorkerSet pods."""

from __future__ import annotations

from pathlib import Path

import yaml

from localcluster import lws


def test_the_controller_is_cached_per_pinned_version() -> None:
    env = {"INFERCYCLE_CACHE": "/cache"}
    assert lws.binary_path(env) == Path(f"/cache/lws/{lws.LWS_VERSION}/bin/lws-controller")
    assert lws.crd_path(env).name == "leaderworkerset.x-k8s.io_leaderworkersets.yaml"


def test_the_configuration_runs_one_instance_with_the_given_certificates(tmp_path: Path) -> None:
    config = yaml.safe_load(lws.controller_config(tmp_path / "certs"))
    assert config["kind"] == "Configuration"
    assert config["leaderElection"] == {"leaderElect": False}
    assert config["internalCertManagement"] == {"enable": False}
    assert config["webhook"] == {
        "host": "127.0.0.1",
        "port": lws.WEBHOOK_PORT,
        "certDir": str(tmp_path / "certs"),
    }


def test_webhooks_are_reached_by_url_and_pod_hooks_see_only_group_pods(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    configurations = lws.webhook_configurations(ca)
    assert [c["kind"] for c in configurations] == [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    hooks = [hook for c in configurations for hook in c["webhooks"]]
    assert len(hooks) == 4
    for hook in hooks:
        url = hook["clientConfig"]["url"]
        assert url.startswith(f"https://127.0.0.1:{lws.WEBHOOK_PORT}/")
        assert hook["clientConfig"]["caBundle"]
        if hook["rules"][0]["resources"] == ["pods"]:
            assert hook["objectSelector"]["matchExpressions"] == [
                {"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}
            ]
            assert hook["rules"][0]["apiGroups"] == [""]
        else:
            assert "objectSelector" not in hook
            assert hook["rules"][0]["apiGroups"] == ["leaderworkerset.x-k8s.io"]
    paths = sorted(hook["clientConfig"]["url"].rsplit("/", 1)[1] for hook in hooks)
    assert paths == [
        "mutate--v1-pod",
        "mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
        "validate--v1-pod",
        "validate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
    ]


def test_the_command_names_the_kubeconfig_and_the_configuration() -> None:
    command = lws.command(Path("/b/lws-controller"), Path("/k"), Path("/c.yaml"))
    assert command[:3] == ["/b/lws-controller", "--kubeconfig=/k", "--config=/c.yaml"]
