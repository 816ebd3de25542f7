"""xcon's nodes, each a process of its own (`python -m nodes.<kind>`).

The organisation's nodes are a sans-I/O core (`core.py`: events and the time in, actions out) run
by the node host (nodes.host) inside a thin ZeroMQ runtime (nodes.runtime), or inside the
simulator (orchestrator.sim): `directory`, `store` and `mta` (one of each per server), and the
move orchestrator (orchestrator.move).

The edge nodes speak a protocol of the outside world as well as ZeroMQ, in one asyncio loop
around the same node host (nodes.edge): `ims`, the Internet Mail Service (SMTP in, and mail and
DSNs out to a smarthost), whose decisions are a core too (nodes.ims.core), so the simulator runs
it with a model of the smarthost; `imap`, Dovecot over a server's mailboxes; and `internet`, a
Postfix standing for the world outside the organisation (with `--network netns --smtp`). The
last two run on real processes only.
"""
