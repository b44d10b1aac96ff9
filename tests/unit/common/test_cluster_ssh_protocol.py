"""The cluster session's SSH keypair (``cluster_info.ssh_keypair``, protocol 1.1) is sent to 1.1
agents only: the object-field path syntax of ``FIELDS_SINCE``."""

from __future__ import annotations

from bai.common import protocol as proto

V = proto.ProtocolVersion


def _body() -> dict[str, object]:
    return {"session_id": "s", "kernel_ids": ["k1", "k2"],
            "configs": [{"cluster_hostname": "main1"}, {"cluster_hostname": "sub1"}],
            "cluster_info": {"mode": "single-node", "size": 2,
                             "ssh_keypair": {"public_key": "ssh-rsa AAAA", "private_key": "-----BEGIN"}}}


def test_a_1_0_agent_gets_no_cluster_keypair_and_the_rest_unchanged() -> None:
    body = _body()
    sent = proto.for_peer("create_kernels", body, V(1, 0))
    assert sent["cluster_info"] == {"mode": "single-node", "size": 2}
    assert {k: v for k, v in sent.items() if k != "cluster_info"} == {
        k: v for k, v in body.items() if k != "cluster_info"}
    assert "ssh_keypair" in body["cluster_info"]  # type: ignore[operator]  # the caller's body is not changed


def test_a_1_1_agent_gets_the_body_as_is() -> None:
    body = _body()
    assert proto.for_peer("create_kernels", body, V(1, 1)) is body


def test_an_object_path_ignores_a_missing_or_non_object_parent() -> None:
    for body in ({"session_id": "s"}, {"cluster_info": None}, {"cluster_info": {"size": 1}},
                 {"cluster_info": ["ssh_keypair"]}):
        assert proto.for_peer("create_kernels", body, V(1, 0)) is body
