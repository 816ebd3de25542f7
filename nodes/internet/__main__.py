"""The outside world's mail server: `python -m nodes.internet --run-dir D --name internet`."""

from __future__ import annotations

import asyncio

from ..runtime import node_args
from .node import Internet


def main() -> None:
    args = node_args("internet")
    asyncio.run(Internet(args.name, args.config).run())


if __name__ == "__main__":
    main()
