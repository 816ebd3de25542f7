"""The orchestrator node process: `python -m orchestrator --run-dir D --name orchestrator`."""

from __future__ import annotations

import json
import os

from nodes.runtime import Runtime, boot_id, node_args

from .move import JournalStep, MoveCore


def main() -> None:
    args = node_args("orchestrator")
    journal_path = args.run_dir / "orchestrator" / "journal.jsonl"
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    journal = open(journal_path, "a", encoding="utf-8")

    def write_journal(action: JournalStep) -> list:
        # written and synced before the step's request goes out
        journal.write(json.dumps(action.record, sort_keys=True) + "\n")
        journal.flush()
        os.fsync(journal.fileno())
        return []

    core = MoveCore(list(args.config.settings.servers), boot_id(), args.config.settings.request_timeout_ms)
    Runtime(args.name, args.config, core, {JournalStep: write_journal}).run()


if __name__ == "__main__":
    main()
