"""A fork server for the suite's `xcon` calls and nodes: `python -m tests.cli_server SOCKET`.

Each `xcon` call of the suite (some 800 a run) used to be `python -m orchestrator.cli ...` from
scratch, and 0.16 s of its 0.18 s of CPU went on Python's start and the imports; so did 0.15 s
of each of some 700 node starts. This process makes the imports once (every command's module and
every node's); each call then forks it, and the child runs `python -m <module>` as Python's `-m`
does (runpy), with the caller's arguments, environment, working directory and standard streams:
a separate process, as a user's call or node is, whose exit code and output are the caller's to
read (tests.conftest.xcon). The suite's nodes start here through orchestrator.processes'
FORK_SERVER (a session-wide fixture in tests/conftest.py sets it); a node forked so is known by
its console (processes.node_identity), since its command line is this server's.

One request per connection, a JSON object (module, argv, env, cwd, session, netns) with three
descriptors passed beside it (stdin, stdout, stderr); orchestrator.processes.fork_call sends it.
The server forks a waiter for the connection; the waiter forks the call, sends its pid (so that
the caller can kill it at a timeout), waits for it and sends its exit status as subprocess
reports it (-N for a signal). The server ends when its stdin (a pipe from the test worker that
started it) closes; a node it started runs on, in its own session, until it is stopped.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import io
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

from orchestrator import netns
from orchestrator.processes import MODULES, fork_call

MAX_REQUEST = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
_lock = threading.Lock()
_server: subprocess.Popen | None = None
_socket = ""


def call(argv: list[str], env: dict[str, str], stdin: bytes | None, timeout: float) -> subprocess.CompletedProcess:
    """`python -m orchestrator.cli *argv`, forked from this worker's server (started on the first
    call): its status and output as subprocess.run(capture_output=True) gives them. stdin is
    /dev/null unless given; at `timeout` the call is killed and TimeoutExpired raised."""
    with (tempfile.TemporaryFile() if stdin is not None else open(os.devnull, "rb")) as given, \
            tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if stdin is not None:
            given.write(stdin)
            given.seek(0)
        proc = fork_call(started(), {"argv": argv, "env": env, "cwd": os.getcwd()},
                         (given.fileno(), out.fileno(), err.fileno()))
        try:
            status = proc.wait(timeout)
        except TimeoutError:
            os.kill(proc.pid, signal.SIGKILL)
            proc.close()
            raise subprocess.TimeoutExpired(["xcon", *argv], timeout) from None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["xcon", *argv], status, out.read(), err.read())


def started() -> str:
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


def stop() -> None:
    """Stop this process's server, if it runs: at the end of the suite's session, so that a run
    inside another program (mutmut runs the tests in its own process, then waits for any child
    of its own) leaves no child behind. atexit stops it otherwise; stopping twice is harmless."""
    global _server
    with _lock:
        if _server is not None:
            _stop(_server, os.path.dirname(_socket))
            _server = None


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
        if request.get("session"):
            os.setsid()  # a node: in a session of its own, as subprocess's start_new_session makes it
        for fd, std in zip(fds, (0, 1, 2)):
            os.dup2(fd, std)
        for fd in fds:
            os.close(fd)
        if request.get("netns"):  # a node on a host of its own: its network, as `ip netns exec` enters it
            netns.enter(request["netns"])
        return request, conn
    for fd in fds:
        os.close(fd)  # the call's streams are its own: a node's console is not held open here
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    try:
        conn.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    except OSError:
        pass  # the caller is gone (it gave up at its timeout and killed the call, or it started a node)
    os._exit(0)


def main() -> None:
    # every command's module and every node's, imported once here instead of in each call
    from orchestrator.cli import xcon
    xcon.load_all()
    for module in MODULES.values():
        importlib.import_module(f"{module}.__main__")
        # what it imports stays; itself it goes, for runpy to run as __main__ (which warns on a
        # console of every node otherwise that it was imported already)
        del sys.modules[f"{module}.__main__"]
    # the imports' objects are left out of the collector's work in every call (Python's advice for
    # a fork server): a call's exit took 70 ms of CPU collecting them, 29 ms without
    gc.freeze()
    request, conn = serve(sys.argv[1])
    conn.close()
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    module = request.get("module", "orchestrator.cli")
    sys.argv = ["-m", *request["argv"]]
    if os.environ.get("PYTHONUNBUFFERED"):  # as `python -u` makes them: a node's console, line by line
        sys.stdout = io.TextIOWrapper(open(1, "wb", 0, closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", 0, closefd=False), write_through=True,
                                      errors="backslashreplace")
    if module == "orchestrator.cli":
        from orchestrator.cli import common
        common.out.width = common.console_width()  # made at import, in the server: this call's streams
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
