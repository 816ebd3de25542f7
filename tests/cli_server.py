"""A fork server for the suite's `xcon` calls: `python -m tests.cli_server SOCKET`.

Each `xcon` call of the suite (some 800 a run) used to be `python -m orchestrator.cli ...` from
scratch, and 0.16 s of its 0.18 s of CPU went on Python's start and the imports. This process
makes the imports once (every command's module); each call then forks it, and the child runs
`python -m orchestrator.cli` as Python's `-m` does (runpy), with the caller's arguments,
environment, working directory and standard streams: a separate process, as a user's call is,
whose exit code and output are the caller's to read (tests.conftest.xcon).

One request per connection, a JSON object (argv, env, cwd) with three descriptors passed beside
it (stdin, stdout, stderr). The server forks a waiter for the connection; the waiter forks the
call, sends its pid (so that the caller can kill it at a timeout), waits for it and sends its exit
status as subprocess reports it (-N for a signal). It ends when its stdin (a pipe from the test
worker that started it) closes.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

MAX_REQUEST = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
_lock = threading.Lock()
_server: subprocess.Popen | None = None
_socket = ""


def call(argv: list[str], env: dict[str, str], stdin: bytes | None, timeout: float) -> subprocess.CompletedProcess:
    """`python -m orchestrator.cli *argv`, forked from this worker's server (started on the first
    call): its status and output as subprocess.run(capture_output=True) gives them. stdin is
    /dev/null unless given; at `timeout` the call is killed and TimeoutExpired raised."""
    path = _started()
    with (tempfile.TemporaryFile() if stdin is not None else open(os.devnull, "rb")) as given, \
            tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        if stdin is not None:
            given.write(stdin)
            given.seek(0)
        conn.connect(path)
        request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}).encode()
        socket.send_fds(conn, [request], [given.fileno(), out.fileno(), err.fileno()])
        conn.settimeout(timeout)
        replies = conn.makefile("rb")
        pid = json.loads(replies.readline())["pid"]
        try:
            status = json.loads(replies.readline())["status"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(["xcon", *argv], timeout) from None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["xcon", *argv], status, out.read(), err.read())


def _started() -> str:
    """The socket of this process's server, started (and awaited) if it is not running."""
    global _server, _socket
    with _lock:
        if _server is None or _server.poll() is not None:
            where = tempfile.mkdtemp(prefix="xcon-cli-")
            _socket = os.path.join(where, "socket")
            _server = subprocess.Popen([sys.executable, "-m", "tests.cli_server", _socket], cwd=ROOT,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            if _server.stdout.readline() != b"ready\n":
                raise RuntimeError(f"the CLI's fork server did not start (exit {_server.wait()})")
            atexit.register(_stop, _server, where)
        return _socket


def _stop(server: subprocess.Popen, where: str) -> None:
    server.stdin.close()  # its end: it exits
    server.wait()
    shutil.rmtree(where, ignore_errors=True)


def serve(path: str) -> tuple[dict, socket.socket]:
    """Accept calls until stdin closes (then exit); returns only in a call's own process."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the waiters are reaped by the kernel
    ready = selectors.DefaultSelector()
    ready.register(listener, selectors.EVENT_READ)
    ready.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in ready.select():
            if key.fileobj is sys.stdin:
                os._exit(0)  # the worker is gone: so is its server
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                return wait_for_call(conn)
            conn.close()


def wait_for_call(conn: socket.socket) -> tuple[dict, socket.socket]:
    """In the waiter: read the request, fork the call, report its pid and status."""
    message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        for fd, std in zip(fds, (0, 1, 2)):
            os.dup2(fd, std)
        for fd in fds:
            os.close(fd)
        return request, conn
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    try:
        conn.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    except OSError:
        pass  # the caller is gone (it gave up at its timeout and killed the call)
    os._exit(0)


def main() -> None:
    # every command's module, imported once here instead of in each call
    from orchestrator.cli import xcon
    xcon.load_all()
    # the imports' objects are left out of the collector's work in every call (Python's advice for
    # a fork server): a call's exit took 70 ms of CPU collecting them, 29 ms without
    gc.freeze()
    request, conn = serve(sys.argv[1])
    conn.close()
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = ["-m", *request["argv"]]
    from orchestrator.cli import common
    common.out.width = common.console_width()  # made at import, in the server: this call's streams
    runpy.run_module("orchestrator.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
