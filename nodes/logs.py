"""A node's log, in one place: the events of its core and of its host, through one pipeline.

Each event goes to a JSON line in `<run-dir>/logs/<node>.jsonl` (the record that `xcon logs` and
`xcon check` read) and, as the cluster's `console` setting says, a readable line on stderr (the
node's console). A simulated node's events go to a `MemorySink` instead, in the same shape.
Every line has ts (epoch seconds, from the clock the host is given, as the node reads it), node,
level, event, and hlc: the node's hybrid logical clock (protocol.hlc), [ms, counter], which every
line advances, so a node's lines are in clock order and the merged timeline is causal.
Nothing here is process-global: a simulator hosts many nodes, each with its own log, in one process.
"""

from __future__ import annotations

import os
import sys
import time
from functools import partialmethod
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from protocol import hlc

from .config import open_append


class JsonLinesFile:
    """A structlog processor that appends the event as one JSON line and passes it on.

    Lines gather in memory and `flush` writes them at the end of each batch of the node's loop,
    before the batch's frames leave (nodes.runtime): a write per line cost a busy MTA dearly
    (docs/performance.md), and a line is still in the file before anyone can hear of what it records. Only
    `flush` touches the disk, so a full disk fails there, where the runtime waits for room and
    tries again, and a line is never half in the file and half lost."""

    def __init__(self, path: Path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.created = cut_torn_line(path) == 0  # a new log: its first line says so (CREATED)
        self._fd = open_append(path)
        # one growing buffer, not a list of lines: each line's bytes are freed as soon as they
        # are copied in, which halves an event's cost (docs/performance.md)
        self._buf = bytearray()

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        # orjson: the JSON line is the per-event cost every node pays; it is several times
        # faster than json.dumps here
        self._buf += orjson.dumps(event_dict, default=_jsonable,
                                  option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
        return event_dict

    def flush(self) -> None:
        """Write what has gathered; what the disk does not take stays, to be written next time."""
        while self._buf:
            del self._buf[:os.write(self._fd, self._buf)]


CREATED = "log.created"  # the first line of every node's log: a log without it was cut or emptied


def log_lost(path: Path, node: str, why: str) -> None:
    """Begin a node's log anew where the one it had is gone: its first line (CREATED) says that it
    replaces a lost one (`lost`), so `xcon check` gives no verdict on it; the node appends after it."""
    now = time.time()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = {"ts": now, "node": node, "level": "error", "event": CREATED, "hlc": hlc.wall(now),
            "lost": f"logs/{path.name} was {why}: what the node logged before is lost"}
    fd = open_append(path)
    try:
        os.write(fd, orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_torn_line(path: Path) -> int:
    """Cut the last line of a log if a kill cut it short (no newline after it), so what the node
    writes next starts on a line of its own and every line in the middle of a log is whole: one
    that does not read is damage (`xcon check` gives no verdict on it). Returns the size kept."""
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            back = size
            while back > 0:
                start = max(0, back - 65536)
                f.seek(start)
                chunk = f.read(back - start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                back = start
            else:
                keep = 0
            if keep < size:
                f.truncate(keep)
            return keep
    except FileNotFoundError:
        return 0


def last_hlc(path: Path) -> int:
    """The hybrid logical clock of the last line a node wrote to its log: a restarted node carries
    on from there, so its new events never sort before its old ones (the wall clock may have gone
    back meanwhile)."""
    stamp = last_value(path, "hlc", list)
    ok = type(stamp) is list and len(stamp) == 2 and all(type(x) is int and x >= 0 for x in stamp)
    return hlc.packed(stamp) if ok else 0


def last_value(path: Path, key: str, kind: type = int) -> Any:
    """The value of type `kind` that `key` holds in the last line of a node's log (its last 64 KiB)
    that has one."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut short by a kill, or the first, partial line of the tail
        if isinstance(event, dict) and type(event.get(key)) is kind:
            return event[key]
    return None


def events_in(path: Path, *needles: bytes) -> Iterator[dict[str, Any]]:
    """The events of a node's log whose lines hold one of `needles`, in order; nothing where the
    log is missing. A line that does not read is passed over (its damage is `xcon check`'s to
    judge): a scan for what the log says must not end the start of a node."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            if any(n in line for n in needles):
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    yield event


class MemorySink:
    """The JSON-lines sink of a simulated node: the events themselves, in order, kept in memory
    (`xcon check` reads them as it reads a file; `dump` writes the file a real node would have)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event_dict)
        return event_dict

    def flush(self) -> None:
        pass

    def dump(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_bytes(b"".join(orjson.dumps(e, default=_jsonable, option=orjson.OPT_APPEND_NEWLINE |
                                               orjson.OPT_NON_STR_KEYS) for e in self.events))


class Console:
    """The console logger: lines gather in a buffer, written to stderr by `flush` (structlog's
    PrintLogger flushes every line, one write each)."""

    def __init__(self) -> None:
        self._file = open(sys.stderr.fileno(), "w", buffering=1 << 16, closefd=False)

    def msg(self, message: str) -> None:
        try:
            self._file.write(message + "\n")
        except OSError:
            pass  # the console is a courtesy: a full disk or a closed pipe must not stop the node

    debug = info = warning = warn = error = err = critical = exception = msg

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError:
            pass  # a console nobody reads any more (its pipe closed) must not stop the node


class NoConsole:
    """A simulated node's console: nobody reads it."""

    def msg(self, message: Any) -> None:
        pass

    debug = info = warning = warn = error = err = critical = exception = msg

    def flush(self) -> None:
        pass


class Sinks:
    """Both of a node's log outputs, written out together."""

    def __init__(self, json_file: JsonLinesFile | MemorySink, console: Console | NoConsole):
        self.json_file, self.console = json_file, console

    def flush(self) -> None:
        self.json_file.flush()
        self.console.flush()


_HEADER_KEYS = frozenset(("ts", "node", "level", "event", "hlc"))  # an event cannot override these
# the console prints these first, its own way (the clock but for its time: the file has it)
_CONSOLE_LEAD = frozenset(("ts", "node", "level", "event", "hlc"))
_clock = [-1, ""]  # the last whole second rendered, and its text: strftime once a second, not per line


def console_line(logger: Any, method: str, event_dict: dict[str, Any]) -> str:
    """The readable console: time, level, event, then the fields (cheaper than ConsoleRenderer)."""
    ts = event_dict.get("ts", 0.0)
    second = int(ts)
    if second != _clock[0]:
        _clock[:] = [second, time.strftime("%H:%M:%S", time.localtime(second))]
    fields = " ".join([f"{k}={v}" for k, v in event_dict.items() if k not in _CONSOLE_LEAD])
    return f"{_clock[1]}.{int(ts * 1000) % 1000:03d} {method:<7} {event_dict['event']:<24} {fields}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_SHIFT, _COUNTER = hlc.SHIFT, hlc.COUNTER


class NodeLog:
    """A node's log: `log`, a structlog logger for the runtime's own events, and `emit`, which
    runs the same processors for the cores' Log actions without a bound logger in between.

    Each event passes the same pieces in the same order (header, JSON line, console line); `emit`
    only skips structlog's per-call machinery (copying the context, merging keywords, dispatching
    on the level), over a third of an event's cost at about nine events a message (docs/performance.md)."""

    def __init__(self, node: str, clock: Callable[[], float], sinks: Sinks, console: str = "warning",
                 hlc_start: int = 0):
        self.node, self.clock = node, clock
        # the node's hybrid logical clock: the host stamps its frames with it, every line advances it
        self.hlc = hlc.Clock(hlc_start)
        # with console="warning", a core's info and debug events go to the JSON file alone: a
        # console line is costly, for a copy nobody reads at load (docs/performance.md)
        self.quiet = frozenset() if console == "info" else frozenset(("info", "debug"))
        self.sinks = sinks
        if isinstance(sinks.console, NoConsole):  # a simulated node: no console line is made at all
            self.quiet = _LEVELS
            self.log: Any = _Emitter(self)
            return
        # this log's own pipeline (wrap_logger), not structlog.configure: a process may host many.
        # (Imported here: the CLI reads logs through this module and has no use for structlog.)
        structlog = _structlog()
        self.log = structlog.wrap_logger(sinks.console, processors=[self.add_header, sinks.json_file, console_line])

    def header(self, level: str, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        """ts, node, level, event, hlc first, then the event's fields; the header wins a clash."""
        now = self.clock() + self.hlc.offset
        clock = self.hlc
        # clock.tick(now), inlined: a line's largest cost after the JSON (docs/performance.md)
        stamp = clock.value + 1
        physical = int(now * 1000) << _SHIFT
        clock.value = stamp = stamp if stamp > physical else physical
        # microseconds, as round(ts, 6) gives, for less (docs/performance.md)
        ordered = {"ts": int(now * 1e6) / 1e6, "node": self.node, "level": level, "event": event,
                   "hlc": [stamp >> _SHIFT, stamp & _COUNTER]}
        if _HEADER_KEYS.isdisjoint(fields):
            ordered.update(fields)
        else:
            for key, value in fields.items():
                ordered.setdefault(key, value)
        return ordered

    def add_header(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        """The header as a structlog processor."""
        return self.header(method, event_dict.pop("event"), event_dict)

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """Log one event of a core: the lines `log.<level>(event, **fields)` writes, for less."""
        event_dict = self.header(level, event, fields)
        self.sinks.json_file(None, level, event_dict)
        if level not in self.quiet:
            self.sinks.console.msg(console_line(None, level, event_dict))

    def flush(self) -> None:
        self.sinks.flush()


_LEVELS = frozenset(("debug", "info", "warning", "error", "critical"))


def _structlog() -> Any:
    """structlog, imported without rich where rich is not loaded yet: structlog.dev loads rich's
    console, pretty-printer and tracebacks for its ConsoleRenderer, which a node never uses (its
    console lines are console_line's), and that was 60 of a node start's 260 ms of CPU, at every
    start of every node. rich imports as usual afterwards (the CLI's tables)."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog
        return structlog
    sys.modules["rich"] = None  # type: ignore[assignment]  # an ImportError for structlog's `import rich`
    try:
        import structlog
    finally:
        del sys.modules["rich"]
    return structlog


class _Emitter:
    """`NodeLog.log` of a node with no console: the host's events go through `emit`, as a core's
    do, without a structlog logger whose console line nobody reads (one per simulated node boot)."""

    def __init__(self, log: NodeLog):
        self._emit = log.emit

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self._emit(level, event, fields)

    debug = partialmethod(_log, "debug")
    info = partialmethod(_log, "info")
    warning = partialmethod(_log, "warning")
    error = partialmethod(_log, "error")


def file_log(node: str, log_file: Path, console: str = "warning") -> NodeLog:
    """The log of a node process: its JSON-lines file and stderr, stamped with the wall clock
    (console: see Settings.console)."""
    return NodeLog(node, time.time, Sinks(JsonLinesFile(log_file), Console()), console, last_hlc(log_file))


def memory_log(node: str, clock: Callable[[], float], hlc_start: int = 0) -> NodeLog:
    """The log of a simulated node: its events in memory, stamped with the simulator's clock."""
    return NodeLog(node, clock, Sinks(MemorySink(), NoConsole()), hlc_start=hlc_start)
