"""The outside world, on a host of its own (`xcon up --network netns --smtp`): a real Postfix
(nodes.postfix) on port 25 of the `internet` host's address, where the IMSs relay by default,
taking mail for `outside.test`. What arrives is moved into the run-dir, a Maildir per user by its
Delivered-To, `<run-dir>/internet/<user>/new/` (Postfix's own folder is under /tmp and goes with it), and logged
(`internet.received`, with the xcon message id of what it carries), so a test or a person reads
the DSN ann@outside.test got where the rest of the run is.
"""

from __future__ import annotations

import asyncio
import email.parser
import os
import shutil
from typing import Any

from ..config import ClusterConfig
from ..edge import EdgeNode, runtime_dir
from ..mail import header
from ..postfix import Postfix

DOMAIN = "outside.test"
SWEEP_S = 0.2


class Internet(EdgeNode):
    kind = "internet"

    def __init__(self, name: str, config: ClusterConfig):
        super().__init__(name, config, peer="directory")  # asks nothing of it: an outside server
        self.address, _, port = config.endpoint(name, "smtp").rpartition(":")
        self.port = int(port)
        self.home = runtime_dir(config.run_dir, "internet")
        self.inbox = config.run_dir / "internet"
        self.postfix: Postfix | None = None
        self.received = 0

    async def start(self) -> list:
        self.postfix = await asyncio.to_thread(Postfix, self.home, self.address, self.port, None, DOMAIN)
        self.log("info", "node.started", pid=os.getpid(), endpoint=self.config.endpoint(self.name),
                 smtp=f"{self.address}:{self.port}", domain=DOMAIN)
        return [self._sweep()]

    async def stop(self) -> None:
        if self.postfix is not None:
            await asyncio.to_thread(self.postfix.stop)

    def status(self) -> dict[str, Any]:
        return {"smtp": f"{self.address}:{self.port}", "domain": DOMAIN, "received": self.received}

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            for new in sorted((self.home / "mail" / "all" / "new").glob("*")):
                with open(new, "rb") as f:
                    headers = email.parser.BytesHeaderParser().parse(f)
                user = header(headers, "Delivered-To", "unknown").partition("@")[0].lower() or "unknown"
                target = self.inbox / user / "new"
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(new, target / new.name)
                new.unlink()
                self.received += 1
                self.log("info", "internet.received", rcpt=f"{user}@{DOMAIN}", file=f"internet/{user}/new/{new.name}",
                         msg_id=header(headers, "X-Xcon-Msg-Id"), subject=header(headers, "Subject", "")[:200],
                         report=headers.get_content_type() == "multipart/report")
