"""The signature on requests forwarded between bridge processes (bridge/cluster_auth.py), without sockets."""

from __future__ import annotations

from bridge.cluster_auth import (
    MAX_AGE_S,
    MISDIRECTED,
    SIGNATURE_HEADER,
    TARGET_HEADER,
    TIMESTAMP_HEADER,
    ClusterSigner,
    Target,
    cluster_key,
)

OWNER = Target("host-b:8080", "4f1c")
PATH = "/api/calls/CA123/say"
BODY = b'{"text": "Please hold."}'
JSON = {"Content-Type": "application/json"}


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(signer: ClusterSigner, **changes: object) -> tuple[str, str, bytes, dict[str, str]]:
    request = {"method": "POST", "path": PATH, "body": BODY, "target": OWNER, "headers": JSON, **changes}
    headers = signer.sign(**request)  # type: ignore[arg-type]
    return "POST", PATH, BODY, headers


def test_a_forward_signed_with_the_shared_key_is_accepted_once_by_its_target() -> None:
    key = cluster_key("", "the-admin-token")
    sender, owner = ClusterSigner(key), ClusterSigner(key)
    method, path, body, headers = signed(sender)
    assert headers["Content-Type"] == "application/json" and headers[TARGET_HEADER] == "host-b:8080 4f1c"
    assert owner.refusal(method, path, body, headers, OWNER) is None
    assert owner.refusal(method, path, body, headers, OWNER) == "replayed"


def test_the_key_comes_from_cluster_secret_else_the_admin_token_and_is_neither() -> None:
    assert cluster_key("", "token") == cluster_key("", "token")
    assert cluster_key("secret", "token") == cluster_key("secret", "other-token")
    assert cluster_key("secret", "token") != cluster_key("", "token")
    assert b"token" not in cluster_key("", "token") and len(cluster_key("", "token")) == 32


def test_anything_changed_on_the_way_is_refused() -> None:
    key = cluster_key("s", "")
    sender = ClusterSigner(key)
    _, _, _, headers = signed(sender)
    for method, path, body, sent in (
        ("PUT", PATH, BODY, headers),
        ("POST", "/api/calls/CA999/say", BODY, headers),
        ("POST", PATH, b'{"text": "Hang up."}', headers),
        ("POST", PATH, BODY, {**headers, "Content-Type": "text/plain"}),
        ("POST", PATH, BODY, {**headers, TARGET_HEADER: "host-c:8080 9999"}),
    ):
        refusal = ClusterSigner(key).refusal(method, path, body, sent, OWNER)
        assert refusal is not None and refusal.startswith("bad signature")


def test_another_key_no_signature_a_stale_one_or_another_target_is_refused() -> None:
    clock = Clock()
    sender = ClusterSigner(cluster_key("s", ""), clock=clock)
    _, _, _, headers = signed(sender)
    owner = ClusterSigner(cluster_key("s", ""), clock=clock)
    stranger = ClusterSigner(cluster_key("other", ""), clock=clock)
    assert (stranger.refusal("POST", PATH, BODY, headers, OWNER) or "").startswith("bad signature")
    unsigned = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
    assert owner.refusal("POST", PATH, BODY, unsigned, OWNER) == "not signed"
    assert owner.refusal("POST", PATH, BODY, JSON, OWNER) == "not signed"
    # The owner started again: the request was for its previous run, whose calls are gone.
    assert owner.refusal("POST", PATH, BODY, headers, Target("host-b:8080", "new-run")) == MISDIRECTED
    clock.now += MAX_AGE_S + 1
    assert (owner.refusal("POST", PATH, BODY, headers, OWNER) or "").startswith("timestamp outside")
    future = dict(headers, **{TIMESTAMP_HEADER: str(int(clock.now + MAX_AGE_S + 5))})
    assert (owner.refusal("POST", PATH, BODY, future, OWNER) or "").startswith("timestamp outside")


def test_remembered_signatures_are_forgotten_once_they_could_no_longer_be_accepted() -> None:
    clock = Clock()
    sender = ClusterSigner(cluster_key("s", ""), clock=clock)
    owner = ClusterSigner(cluster_key("s", ""), clock=clock, max_remembered=3)
    for i in range(5):
        _, _, _, headers = signed(sender, body=f"{i}".encode())
        assert owner.refusal("POST", PATH, f"{i}".encode(), headers, OWNER) is None
    assert len(owner._seen) == 3  # bounded, oldest first out
    clock.now += MAX_AGE_S + 1
    _, _, _, headers = signed(sender)
    assert owner.refusal("POST", PATH, BODY, headers, OWNER) is None
    assert len(owner._seen) == 1  # the expired ones were dropped on the way
