"""The IMS's relay: what its MTA handed it for outside the organisation goes to the smarthost, and
what will not go goes back to the MTA.

The promise is the MTA's own: each item ends relayed (the smarthost said 250) or, if it will not
leave, handed back to its MTA (`mta.relay_failed`), which fails the pair as it fails any: an NDR
to the originator for a message, the postmaster's copy for a report. An item will not leave when
the smarthost refuses it for good (5xx), or when its lifetime (the MTA's time-out for it, longer
for a report) passes while the smarthost is down or there is none. Anything that goes wrong with
one item is that item's: logged, tried again at the retry interval, and never the end of the
relay (one outside address with a UTF-8 local part once raised UnicodeEncodeError out of
smtplib, which ended the relay's task, silently, for every later item).
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from typing import Any

from ..mail import DOMAIN, address
from .outbound import Item, Outbound

IDLE_S = 5.0  # the longest the relay sleeps with nothing due


class Relay:
    """The relay of one IMS (nodes.ims.node.Ims: its log, its MTA and `ask`)."""

    def __init__(self, ims: Any, outbound: Outbound, smarthost: str, retry_s: float):
        self.ims, self.outbound, self.smarthost, self.retry_s = ims, outbound, smarthost, retry_s
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                wait = await self._pass(time.time())
            except Exception as exc:  # a bug of one pass: said, and the next pass goes on
                self.ims.log("error", "ims.relay_error", error=f"{type(exc).__name__}: {exc}")
                wait = self.retry_s
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _pass(self, now: float) -> float:
        """Relay, expire or hand back each item whose time has come; how long until the next."""
        for item in list(self.outbound.items.values()):
            if item.failed is None and now >= item.expires_at:
                self._fail(item, f"expired: {'no smarthost took it' if not self.smarthost else item.reason or '-'}")
            if item.failed is not None:
                if item.next_at <= now:
                    await self._hand_back(item)
            elif self.smarthost and item.next_at <= now:
                await self._relay_one(item)
        now = time.time()
        due = [i.next_at for i in self.outbound.items.values() if i.failed is not None or self.smarthost]
        due += [i.expires_at for i in self.outbound.items.values() if i.failed is None]
        return max(0.05, min(min(due, default=now + IDLE_S), now + IDLE_S) - now)

    async def _relay_one(self, item: Item) -> None:
        item.attempts += 1
        mail_from = "" if item.ndr_for else address(item.sender)  # a report: the null reverse-path
        try:
            await asyncio.to_thread(send, self.smarthost, self.ims.name, mail_from, item.rcpt, item.raw)
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
            # a refusal of the sender or the data has the reply on it; of the recipient, per recipient
            code, said = ((exc.smtp_code, exc.smtp_error) if isinstance(exc, smtplib.SMTPResponseException)
                          else next(iter(exc.recipients.values()), (451, b"")))
            words = f"{code} {said.decode(errors='replace') if isinstance(said, bytes) else said}"
            if code >= 500:
                self._fail(item, f"refused: {words}"[:500])
            else:
                self._later(item, words)
            return
        except smtplib.SMTPNotSupportedError as exc:  # an address in UTF-8, a smarthost without SMTPUTF8
            self._fail(item, f"refused: {exc}"[:500])
            return
        except Exception as exc:  # the smarthost down or gone, or anything else: this item's, tried again
            self._later(item, f"{type(exc).__name__}: {exc}"[:500])
            return
        self.outbound.done(item, self.smarthost, time.time())
        self.ims.log("info", "ims.relayed", msg_id=item.msg_id, rcpt=item.rcpt, ndr_for=item.ndr_for,
                     ndr_rcpts=item.ndr_rcpts, smarthost=self.smarthost, attempt=item.attempts)

    def _fail(self, item: Item, failed: str) -> None:
        """It will not leave: in failed/ first (never relayed after), then back to the MTA."""
        self.outbound.fail(item, failed)
        item.next_at = 0.0
        self.ims.log("warning", "ims.relay_failed", msg_id=item.msg_id, rcpt=item.rcpt, ndr_for=item.ndr_for,
                     smarthost=self.smarthost or None, reason=failed, attempts=item.attempts,
                     kept=f"ims/{self.ims.server}/failed/{item.key}.msg")

    async def _hand_back(self, item: Item) -> None:
        """The MTA takes the failure (durably, with its report) before the item leaves the queue."""
        body = {"msg_id": item.msg_id, "sender": item.sender, "rcpt": item.rcpt, "raw": item.raw,
                "ndr_for": item.ndr_for, "ndr_rcpts": item.ndr_rcpts, "accepted_at": item.accepted_at,
                "priority": item.priority, "reason": item.why, "diagnostic": item.failed or ""}
        try:
            answer = await self.ims.ask("mta.relay_failed", body, trace=item.ndr_for or item.msg_id)
        except TimeoutError:
            answer = None
        if answer is None or answer.type != "ok":
            why = getattr(answer.body, "reason", answer.type) if answer is not None else f"{self.ims.mta} did not answer"
            item.next_at = time.time() + self.retry_s
            self.ims.log("warning", "ims.hand_back_deferred", msg_id=item.msg_id, rcpt=item.rcpt, reason=why,
                         retry_in_ms=int(self.retry_s * 1000))
            return
        self.outbound.returned_to_mta(item, self.ims.mta, time.time())
        self.ims.log("info", "ims.returned", msg_id=item.msg_id, rcpt=item.rcpt, ndr_for=item.ndr_for,
                     ndr_rcpts=item.ndr_rcpts, reason=item.failed, to=self.ims.mta)

    def _later(self, item: Item, reason: str) -> None:
        item.reason, item.next_at = reason, time.time() + self.retry_s
        self.ims.log("warning", "ims.relay_deferred", msg_id=item.msg_id, rcpt=item.rcpt, smarthost=self.smarthost,
                     reason=reason, retry_in_ms=int(self.retry_s * 1000))


def send(smarthost: str, name: str, mail_from: str, rcpt: str, raw: bytes) -> None:
    """One message to the smarthost; an address in UTF-8 goes with SMTPUTF8 (RFC 6531), which a
    smarthost that does not offer it refuses (smtplib.SMTPNotSupportedError)."""
    host, _, port = smarthost.rpartition(":")
    utf8 = not (mail_from.isascii() and rcpt.isascii())
    with smtplib.SMTP(host, int(port), local_hostname=f"{name}.{DOMAIN}", timeout=10) as client:
        client.sendmail(mail_from, [rcpt], raw, mail_options=["SMTPUTF8"] if utf8 else ())
