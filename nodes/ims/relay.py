"""How the IMS's shell relays one item to the smarthost (nodes.ims.core's Relay action), in a
thread of its own, and what the smarthost's answer is to the core: (code, words), code None when
it was not reached. Anything that goes wrong with one item is that item's, tried again at the
retry interval (nodes.ims.core), never the end of the relaying: one outside address with a UTF-8
local part once raised UnicodeEncodeError out of smtplib, which ended the relay's task, silently,
for every later item.
"""

from __future__ import annotations

import smtplib

from ..mail import DOMAIN


def attempt(smarthost: str, name: str, mail_from: str, rcpt: str, raw: bytes) -> tuple[int | None, str]:
    """One try at the smarthost: 250 and its words, its refusal's code and words, or None and why not."""
    try:
        send(smarthost, name, mail_from, rcpt, raw)
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
        # a refusal of the sender or the data has the reply on it; of the recipient, per recipient
        code, said = ((exc.smtp_code, exc.smtp_error) if isinstance(exc, smtplib.SMTPResponseException)
                      else next(iter(exc.recipients.values()), (451, b"")))
        return code, f"{code} {said.decode(errors='replace') if isinstance(said, bytes) else said}"
    except smtplib.SMTPNotSupportedError as exc:  # an address in UTF-8, a smarthost without SMTPUTF8
        return 553, str(exc)
    except Exception as exc:  # the smarthost down or gone, or anything else: this item's, tried again
        return None, f"{type(exc).__name__}: {exc}"
    return 250, "250 OK"


def send(smarthost: str, name: str, mail_from: str, rcpt: str, raw: bytes) -> None:
    """One message to the smarthost; an address in UTF-8 goes with SMTPUTF8 (RFC 6531), which a
    smarthost that does not offer it refuses (smtplib.SMTPNotSupportedError)."""
    host, _, port = smarthost.rpartition(":")
    utf8 = not (mail_from.isascii() and rcpt.isascii())
    with smtplib.SMTP(host, int(port), local_hostname=f"{name}.{DOMAIN}", timeout=10) as client:
        client.sendmail(mail_from, [rcpt], raw, mail_options=["SMTPUTF8"] if utf8 else ())
