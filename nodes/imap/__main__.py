"""The IMAP node process: `python -m nodes.imap --run-dir D --name imap.<server>`."""

from __future__ import annotations

import asyncio

from ..runtime import node_args
from .node import Imap


def main() -> None:
    args = node_args("imap")
    asyncio.run(Imap(args.name, args.config).run())


if __name__ == "__main__":
    main()
