"""The Internet Mail Service node process: `python -m nodes.ims --run-dir D --name ims.<server>`."""

from __future__ import annotations

import asyncio

from ..runtime import node_args
from .node import Ims


def main() -> None:
    args = node_args("ims")
    asyncio.run(Ims(args.name, args.config).run())


if __name__ == "__main__":
    main()
