"""Move User's hold on an IMAP user (nodes.imap.node.Imap._hold), without Dovecot."""

from __future__ import annotations

import asyncio
import time

from nodes.imap.node import Imap


def test_a_hold_ends_the_sessions_only_after_the_second_of_the_users_rewrite_is_over():
    """Dovecot reads its passwd-file again at most once a second (its loop's whole-second clock):
    a login in the second of the rewrite may still be taken with the old file, so the kick that
    ends the user's sessions must come after that second, or such a login outlives the hold (the
    IMAP test caught one; as a race, it catches it one time in three)."""
    imap = Imap.__new__(Imap)  # no config, no Dovecot: the hold's order alone
    imap.users, imap.held, done = ["bob", "carol"], {}, {}

    async def publish(users):
        done["published"], imap.users = time.time(), users

    async def kick(user):
        done["kicked"] = time.time()
        return True

    imap._publish, imap._kick, imap.log = publish, kick, lambda *a, **k: None
    assert asyncio.run(imap._hold("bob", "move.1")) == ("ok", {})
    assert imap.users == ["carol"] and imap.held["bob"][0] == "move.1"
    assert int(done["kicked"]) > int(done["published"]), done
