"""Mail the cloud sends people: the link that verifies a new account's address, and
invitations to follow a patient.

With NIGHTLINK_SMTP_HOST set the message goes to that server (STARTTLS unless turned off,
a sign-in if a user name is set); without one it is written to NIGHTLINK_MAIL_DIR as an
.eml file, so a deployment with no mail server (and the tests) still works: the operator
hands the link over. A server that refuses or cannot be reached is reported once per
message as a WARNING and the caller decides what the person is told; nothing is lost, as
the link can be sent again.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from nightlink.cloud.config import Settings

_LOGGER = logging.getLogger(__name__)
SMTP_TIMEOUT_S = 10.0


class MailError(Exception):
    """The message could not be handed to the mail server or written; one sentence."""


def compose(settings: Settings, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="nightlink")
    msg.set_content(body)
    return msg


def send(settings: Settings, to: str, subject: str, body: str) -> str:
    """Send (or file) one message; returns where it went: "smtp" or the .eml path."""
    try:
        msg = compose(settings, to, subject, body)
    except (ValueError, TypeError) as exc:
        raise MailError(f"A message cannot be addressed to {to!r} ({exc}).") from None
    if settings.smtp_host:
        _smtp(settings, msg)
        return "smtp"
    return str(_file(settings, msg))


def _smtp(settings: Settings, msg: EmailMessage) -> None:
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port,
                          timeout=SMTP_TIMEOUT_S) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        _LOGGER.warning("The mail server at %s did not take a message for %s: %s", where,
                        msg["To"], exc)
        raise MailError(f"The mail server at {where} did not take the message "
                        f"({type(exc).__name__}).") from None


def _file(settings: Settings, msg: EmailMessage) -> Path:
    folder = Path(settings.mail_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Named by time and a hash of the address: any address makes a valid file name.
        tag = hashlib.sha256(str(msg["To"]).encode()).hexdigest()[:12]
        path = folder / f"{time.time_ns()}-{tag}.eml"
        path.write_bytes(msg.as_bytes())
    except OSError as exc:
        _LOGGER.warning("Could not write a message for %s into %s: %s", msg["To"], folder, exc)
        raise MailError(f"The message could not be written to {folder} "
                        f"({exc.strerror or type(exc).__name__}).") from None
    _LOGGER.info("No mail server set (NIGHTLINK_SMTP_HOST): the message for %s is in %s",
                 msg["To"], path)
    return path
