"""Move User's hold on an IMAP user (nodes.imap.node.Imap._hold) and `xcon wait`'s question (_synced), without Dovecot."""

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


def test_a_waits_question_is_answered_only_once_dovecot_has_read_the_users_it_wrote():
    """`xcon wait` asks an IMAP node to compare its users with the directory (imap.sync): the
    answer must come after the second in which it rewrote them is over (Dovecot's re-read), or a
    login right after the wait can still meet the old file."""
    imap = Imap.__new__(Imap)  # no config, no Dovecot: the answer's order alone
    imap.users, imap.usn, imap.syncing, done = ["carol"], 3, asyncio.Lock(), {}

    async def compare():
        imap.published, imap.users, imap.usn = time.time(), ["bob", "carol"], 4  # bob moved here

    imap._compare = compare

    async def ask():
        answer = await imap._synced()
        done["answered"] = time.time()
        return answer

    assert asyncio.run(ask()) == ("imap.synced", {"usn": 4, "users": ["bob", "carol"]})
    assert int(done["answered"]) > int(imap.published), done
