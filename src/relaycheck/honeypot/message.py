"""PURE: the facts the honeypot keeps about one message (hashes, subject, URLs, attachments).

Parsing is bounded: at most ``MAX_PARTS`` MIME parts are looked at, at most ``TEXT_LIMIT``
characters of text are searched for URLs and hashed, so a hostile message costs little time.
"""

from __future__ import annotations

import hashlib
import re
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

import ppdeep

from relaycheck.honeypot.model import MAX_ATTACHMENTS, MAX_URLS, Attachment, MessageFacts, cap

MAX_PARTS = 200
TEXT_LIMIT = 256 * 1024
_URL = re.compile(r"""\bhttps?://[^\s<>"'()\[\]{}]{1,2000}""", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return cap(" ".join(str(value).split())) if value is not None else ""


def _decoded(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, AssertionError):
        return b""
    return payload if isinstance(payload, bytes) else b""


def _text(part: Message, payload: bytes) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", errors="replace")


def message_text(raw: bytes) -> tuple[Message, str]:
    """The parsed message and its readable text (subject and text parts), bounded."""
    message = message_from_bytes(raw, policy=compat32)
    texts = [_header(message, "Subject")]
    size = 0
    for number, part in enumerate(message.walk()):
        if number >= MAX_PARTS or size >= TEXT_LIMIT:
            break
        if part.get_content_maintype() == "text" and not part.get_filename():
            text = _text(part, _decoded(part))[: TEXT_LIMIT - size]
            size += len(text)
            texts.append(text)
    if size == 0 and not message.is_multipart() and not message.keys():
        texts.append(raw[:TEXT_LIMIT].decode("utf-8", errors="replace"))  # no headers at all
    return message, "\n".join(texts)


def message_facts(raw: bytes) -> tuple[MessageFacts, str]:
    """The facts kept about ``raw``, and its readable text (where a relay test names the relay)."""
    message, text = message_text(raw)
    urls = list(dict.fromkeys(cap(u.rstrip(".,;:!?"), 1024) for u in _URL.findall(text)))[:MAX_URLS]
    attachments: list[Attachment] = []
    for number, part in enumerate(message.walk()):
        if number >= MAX_PARTS or len(attachments) >= MAX_ATTACHMENTS:
            break
        name = part.get_filename()
        if name is None and part.get_content_disposition() != "attachment":
            continue
        payload = _decoded(part)
        attachments.append(
            Attachment(cap(str(name or "")), part.get_content_type(), len(payload), hashlib.sha256(payload).hexdigest())
        )
    normalised = _SPACE.sub(" ", text).strip()
    facts = MessageFacts(
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        subject=_header(message, "Subject"),
        message_id=_header(message, "Message-ID"),
        sender_header=_header(message, "From"),
        urls=urls,
        attachments=attachments,
        fuzzy_hash=ppdeep.hash(normalised.encode("utf-8", errors="replace")) if normalised else "",
        headers=len(message.keys()),
    )
    return facts, text
