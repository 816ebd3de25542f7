"""`xcon status`'s state column, one node kind at a time (orchestrator/cli/cluster.py
`_node_state`): what each node answered, said in a line. The table on a running cluster, and
its width, are tests/integration/test_viewers.py's and test_check_audit.py's."""

from __future__ import annotations

from orchestrator.cli.cluster import _node_state


def test_an_mta_behind_the_directory_says_so_and_one_in_step_does_not():
    queue = {"open_pairs": 1, "deferred": 2, "in_flight": 0}
    behind = _node_state("mta.ex1", {"cache_usn": 6, **queue}, 7)
    assert behind == "cache usn 6/7  (cache behind); queue: 1 open, 2 deferred, 0 in flight"
    assert "behind" not in _node_state("mta.ex2", {"cache_usn": 7, **queue}, 7)


def test_a_store_names_its_locks_and_the_mailboxes_a_legacy_move_left():
    state = _node_state("store.ex1", {"mailboxes": {"a": 1, "b": 2}, "locked": {"a": "move.1", "b": "move.2"},
                                      "incoming": ["b"], "made": ["c"], "soft_deleted": ["d"]}, 7)
    assert state == ("2 mailboxes, locked: a by move.1, b by move.2 (incoming), made live by a legacy move: c, "
                     "soft-deleted: d")
    assert _node_state("store.ex2", {"mailboxes": {}}, 7) == "0 mailboxes"


def test_the_orchestrator_counts_its_moves_and_names_what_is_armed_and_paused():
    state = _node_state("orchestrator", {"active": [{}], "finished": 3, "armed": [{"node": "store.ex2", "step": "copy"}],
                                         "paused": ["hold"]}, 7)
    assert state == "1 move(s) running, 3 finished; armed: kill store.ex2 at copy; paused: hold"
    assert _node_state("orchestrator", {}, 7) == "0 move(s) running, 0 finished"


def test_the_edge_nodes_and_the_directory_say_where_they_listen_and_what_they_hold():
    assert _node_state("directory", {"usn": 7, "recipients": 3}, 7) == "usn 7, 3 recipients"
    assert _node_state("ims.ex1", {"smtp": "127.0.0.1:2525", "accepted": 2, "outbound": 1, "relayed": 0}, 7) == (
        "SMTP 127.0.0.1:2525; 2 accepted, 1 waiting to leave, 0 relayed to no smarthost")
    assert _node_state("imap.ex1", {"imap": "127.0.0.1:1143", "dovecot_pid": 9, "users": []}, 7) == (
        "IMAP 127.0.0.1:1143 (Dovecot pid 9); users: none")
    assert _node_state("internet", {"smtp": "127.0.0.1:2526", "domain": "example.net", "received": 4}, 7) == (
        "the outside world: SMTP 127.0.0.1:2526 for example.net; 4 received")
