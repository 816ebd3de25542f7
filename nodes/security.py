"""CURVE on every socket, and a ZAP handler that admits only the cluster's own key.

`xcon up` creates the cluster's key pair in `<run-dir>/keys/` (a directory and files only their
owner can read). Every server socket (ROUTER, PUB) is a CURVE server with that key; every client
(DEALER, SUB, the CLI) presents the cluster's key pair, and the ZAP handler (pyzmq's
ThreadAuthenticator) admits only public keys found in `<run-dir>/keys/allowed/`. A client without
the keys, or with other keys, never gets a frame through; each node logs such a refusal
(`auth.refused`) from its socket monitor. `--insecure` turns all of this off, loudly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

KEYS = "keys"
REFUSALS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def create_keys(run_dir: Path) -> None:
    keys = run_dir / KEYS
    shutil.rmtree(keys, ignore_errors=True)
    (keys / "allowed").mkdir(parents=True)
    os.chmod(keys, 0o700)
    public, secret = zmq.auth.create_certificates(str(keys), "cluster")
    shutil.copy(public, keys / "allowed" / "cluster.key")
    for path in (public, secret, keys / "allowed" / "cluster.key"):
        os.chmod(path, 0o600)
    os.chmod(keys / "allowed", 0o700)


class Security:
    """Applies the cluster's CURVE settings to sockets; a no-op when the cluster is insecure."""

    def __init__(self, run_dir: Path, insecure: bool):
        self.insecure = insecure
        self.keys = run_dir / KEYS
        if not insecure:
            secret_file = self.keys / "cluster.key_secret"
            if not secret_file.exists():
                raise FileNotFoundError(f"{secret_file} is missing (the cluster's keys; was it started with xcon up?)")
            self.public, self.secret = zmq.auth.load_certificate(str(secret_file))

    def server(self, sock: zmq.Socket) -> None:
        if not self.insecure:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:
        if not self.insecure:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_serverkey = self.public

    def dealer(self, ctx: Any, endpoint: str, **options: Any) -> Any:
        """A DEALER on `ctx` (a zmq or zmq.asyncio context) connected to `endpoint` as this
        cluster's client, closing at once (linger 0); `options` are socket options set before the
        connect (sndhwm=...)."""
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        self.client(sock)
        for name, value in options.items():
            setattr(sock, name, value)
        sock.connect(endpoint)
        return sock

    def authenticator(self, ctx: zmq.Context) -> ThreadAuthenticator | None:
        """Start the ZAP handler; it must run before a server socket binds. (Imported here: the
        thread's module pulls in asyncio and ssl, which the CLI, a client only, does not need.)"""
        if self.insecure:
            return None
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.keys / "allowed"))
        return auth


def create_smtp_certificate(run_dir: Path) -> Path:
    """A self-signed certificate for the IMSs' STARTTLS (`xcon up --smtp-tls`): keys/ims.crt and
    keys/ims.key, by the openssl command; a client trusts it by that file (a lab's, not a CA's)."""
    import subprocess

    keys = run_dir / KEYS
    keys.mkdir(mode=0o700, exist_ok=True)
    crt, key = keys / "ims.crt", keys / "ims.key"
    if not shutil.which("openssl"):
        raise FileNotFoundError("--smtp-tls makes its certificate with the openssl command, which is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                    "/CN=xcon IMS", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(crt)], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return crt
