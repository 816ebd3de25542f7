"""xcon's nodes, each a process of its own (`python -m nodes.<kind>`).

The organisation's nodes are a sans-I/O core (`core.py`: events and the time in, actions out) run
by the node host (nodes.host) inside a thin ZeroMQ runtime (nodes.runtime), or inside the
simulator (orchestrator.sim): `directory`, `store` and `mta` (one of each per server), and the
move orchestrator (orchestrator.move).

The edge nodes speak a protocol of the outside world as well as ZeroMQ, in one asyncio loop
(nodes.edge), and run on real processes only: `ims`, the Internet Mail Service (SMTP in, and
mail and DSNs out to a smarthost); `imap`, Dovecot over a server's mailboxes; and `internet`, a
Postfix standing for the world outside the organisation (with `--network netns --smtp`).
"""
