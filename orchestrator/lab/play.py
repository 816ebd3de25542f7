"""A world's schedule played on a cluster: each event at its time on the cluster's clock (the
wall clock, or the simulator's), and what its faults owe it afterwards: a killed node (or the
outside world's smarthost) started again after its drawn time, the network healed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from orchestrator import cluster as cl
from orchestrator.cluster.client import ClusterError
from orchestrator.sim.cluster import SimCluster

from . import outside, smtp_client
from .worlds import NET_FAULTS, World, move_targets

if TYPE_CHECKING:
    from .chaos import TrialResult


class Player:
    """Plays `world.events` once (`play`), counting what it did into `result`."""

    def __init__(self, cluster: cl.Cluster, world: World, result: TrialResult,
                 smarthost: outside.Smarthost | None = None):
        self.cluster, self.world, self.result, self.smarthost = cluster, world, result, smarthost
        self.t0 = cluster.clock.now()
        self.restarts: list[tuple[float, str]] = []  # (when, node): a killed node starts again; "": the smarthost
        self.heals: list[float] = []  # when the network faults end (a heal ends all of them)
        self.actions: dict[str, Callable[[dict[str, Any]], None]] = {
            "send": self.send, "outside": self.outside, "imap": self.imap, "restrict": self.restrict,
            "move": self.move}

    def play(self) -> None:
        cluster = self.cluster
        for event in self.world.events:
            if isinstance(cluster, SimCluster):
                cluster.world.rearm()  # each step may run Network.stuck_events events, no more
            self.owed_until(event["at"])
            self.until(event["at"])
            if not cluster.alive("orchestrator"):
                cluster.restart("orchestrator")  # it killed itself at a step (kill_at_step)
            try:
                self.actions.get(event["do"], self.fault)(event)
            except ClusterError:
                if event["do"] == "send":
                    self.result.refused += 1  # e.g. the MTA is paused: the client gave up, the MTA may still accept
        for at, node in self.restarts:
            self.until(at)
            self.start(node)
        if self.heals:
            self.until(self.heals[-1])
            self.heal()

    # --- the clock and what faults owe ------------------------------------------------------------

    def until(self, at: float) -> None:
        """Wait (run the world) until `at` seconds after the schedule began."""
        delay = self.t0 + at - self.cluster.clock.now()
        if delay > 0:
            self.cluster.clock.sleep(delay)

    def owed_until(self, at: float) -> None:
        """The restarts and heals due by `at`, each at its own time."""
        while self.restarts and self.restarts[0][0] <= at:
            when, node = self.restarts.pop(0)
            self.until(when)  # a killed node stays down for its drawn time, no less
            self.start(node)
        while self.heals and self.heals[0] <= at:
            self.until(self.heals.pop(0))
            self.heal()

    def owe_restart(self, at: float, node: str) -> None:
        self.restarts.append((at, node))
        self.restarts.sort()

    def start(self, node: str) -> None:
        if node:
            self.cluster.restart(node)
        elif self.smarthost is not None:
            self.smarthost.up()

    def heal(self) -> None:
        try:
            self.cluster.fault("heal", "")
        except ClusterError:
            pass  # the orchestrator is down: settle's clear heals the network too

    # --- the events ---------------------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        world, cluster = self.world, self.cluster
        self.result.messages += 1
        # a short wait: a paused MTA must not hold up the rest of the schedule
        subject = "s" * event["subject_bytes"] if "subject_bytes" in event else f"chaos {world.seed}"
        if world.via == "smtp" and not any("@" in r for r in event["to"]):
            # a real client's SMTP session: a user's with its own server's IMS, an outside
            # sender's with the IMS of the server its MX names
            self.result.told.append(smtp_client.submit(cluster, event["sender"], event["to"], subject,
                                                       event.get("priority"), server=event.get("mx")))
        else:  # (mail for outside leaves from the MTA a user's client submits to: the IMS relays for no one)
            cluster.send(event["sender"], event["to"], subject, "", timeout=2.0 + len(subject) / 2e6,
                         priority=event.get("priority"), msg_id=event.get("msg_id"))

    def outside(self, event: dict[str, Any]) -> None:
        """The smarthost is down for a while."""
        if self.smarthost is not None:
            self.smarthost.down()
            self.owe_restart(event["at"] + event["down_s"], "")
            self.result.faults += 1

    def imap(self, event: dict[str, Any]) -> None:
        """A user at its IMAP client."""
        try:
            outside.imap_act(self.cluster, event["alias"], event["act"], event["pick"])
            self.result.imap_acts += 1
        except outside.ImapRefused:
            self.result.imap_refused += 1

    def restrict(self, event: dict[str, Any]) -> None:
        """The recipient's delivery restrictions change (Q178534)."""
        self.cluster.set_user(event["alias"], {"reject_from": event["reject_from"]}, wait=False)

    def move(self, event: dict[str, Any]) -> None:
        cluster = self.cluster
        entry = cluster.lookup(event["alias"])
        others = move_targets(self.world, entry["home_server"])
        if not others:
            return  # the only server of its site: Move User has nowhere to take it
        target = others[int(event["pick"] * len(others))]
        down = event.get("source_down")
        if down:  # the source store is down or paused as the move starts
            store = f"store.{entry['home_server']}"
            if down["how"] == "pause":
                cluster.fault("pause", store, seconds=down["seconds"])
            else:
                cluster.fault("kill", store)
                self.owe_restart(event["at"] + down["seconds"], store)
            self.result.faults += 1
        cluster.move(event["alias"], target, copy_delay_ms=self.world.copy_delay_ms, wait=False)
        self.result.moves += 1

    def fault(self, event: dict[str, Any]) -> None:
        skip = ("at", "do", "kind", "node", "peer") + (("restart_after",) if event["kind"] == "kill" else ())
        params = {k: v for k, v in event.items() if k not in skip}
        self.cluster.fault(event["kind"], event["node"], event.get("peer"), **params)
        self.result.faults += 1
        if event["kind"] == "kill":
            self.owe_restart(event["at"] + event["restart_after"], event["node"])
        if event["kind"] in NET_FAULTS:  # lasts its drawn time from when it was made
            self.heals.append(self.cluster.clock.now() - self.t0 + event["seconds"])
            self.heals.sort()
