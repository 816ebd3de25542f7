"""CURVE and ZAP: a client without the cluster's keys, or with other keys, gets nothing in."""

from __future__ import annotations

import stat
import uuid

import zmq

from protocol import Frame, encode

from ..conftest import wait_for_event


def try_ping(endpoint: str, configure) -> bool:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    # a handshake refused before the send leaves the socket no peer, and a DEALER's send then
    # waits for one: nothing got in
    sock.sndtimeo = 800
    configure(sock)
    sock.connect(endpoint)
    try:
        sock.send(encode(Frame("ping", uuid.uuid4().hex, "intruder", 1, {})))
        return bool(sock.poll(800))
    except zmq.Again:
        return False
    finally:
        sock.close()


def test_only_the_clusters_key_gets_in(cluster_factory):
    cluster = cluster_factory("sp4", replication_lag_ms=0, replication_jitter_ms=0)
    run = cluster.config.run_dir
    keys = run / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for f in keys.rglob("*.key*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    other_public, other_secret = zmq.curve_keypair()
    cluster_public = (keys / "cluster.key").read_text().split('public-key = "')[1].split('"')[0].encode()

    def no_keys(sock):
        pass

    def wrong_keys(sock):  # knows the server's public key, but its own key is not the cluster's
        sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = other_secret, other_public, cluster_public

    for node in ("mta.ex1", "orchestrator", "store.ex1", "directory"):
        endpoint = cluster.config.endpoint(node)
        assert not try_ping(endpoint, no_keys), f"{node} answered a client without keys"
        assert not try_ping(endpoint, wrong_keys), f"{node} answered a client with a foreign key"
    wait_for_event(run, event="auth.refused", node="mta.ex1", reason="key not admitted")
    wait_for_event(run, event="auth.refused", node="directory")
    # nothing got in: no user, no message, no move; the cluster's own client still works
    assert cluster.status_of("directory")["usn"] == 0
    assert cluster.client.request("mta.ex1", "ping").body.ready


def test_insecure_cluster_says_so(cluster_factory):
    cluster = cluster_factory("sp4", insecure=True)
    assert not (cluster.config.run_dir / "keys").exists()
    assert try_ping(cluster.config.endpoint("mta.ex1"), lambda sock: None)
    wait_for_event(cluster.config.run_dir, event="security.off", node="mta.ex1")
