"""Credentials inside model URLs, hidden wherever a URL is shown.

A `model_path` may carry a secret: `https://user:password@host/m.tar.gz`, or a
presigned object URL (`...?OSSAccessKeyId=...&Signature=...`, `...&X-Amz-Signature=...`).
The full URL is what the server fetches; what it shows (events, status messages, logs,
`desc`'s ServiceConfig, versions) goes through `redact_text`: the user-info part and
the values of signing query parameters become `***`.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

#: Query parameters whose values are credentials (compared in lower case).
SECRET_PARAMS = frozenset({
    "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-oss-signature", "x-oss-credential", "x-oss-security-token", "security-token",
    "ossaccesskeyid", "awsaccesskeyid", "accesskeyid", "x-goog-signature", "x-goog-credential",
    "sig", "token", "access_token", "api_key", "apikey", "key", "password", "secret",
})

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_PARAM = re.compile(r"(?P<name>[^&=;]+)=(?P<value>[^&;]*)")


def redact_url(url: str) -> str:
    """`url` with its user info and credential query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL.sub(lambda m: m.group(0).split("://", 1)[0] + "://" + MASK, url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        query = _PARAM.sub(
            lambda m: m.group("name") + "=" + (MASK if m.group("name").strip().lower() in SECRET_PARAMS
                                               else m.group("value")), query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted (messages, events, log lines)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


#: Keys of a service JSON whose whole value is a credential (a git mount's password,
#: EAS's `dockerAuth`, base64 of user:password).
SECRET_KEYS = frozenset({"password", "dockerAuth"})


def redact_data(value: Any) -> Any:
    """A JSON-like value (a service spec) with every string in it redacted, and the values
    of `SECRET_KEYS` masked whole."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: MASK if k in SECRET_KEYS and isinstance(v, str) and v else redact_data(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    return value


def unredacted(sent: Any, stored: Any) -> Any:
    """`sent` with every value that is exactly what `redact_data` shows of the stored one
    replaced by the stored value: `desc` output sent back with `modify` keeps credentials."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        return {k: unredacted(v, stored[k]) if k in stored else v for k, v in sent.items()}
    if isinstance(sent, list) and isinstance(stored, list):
        return [unredacted(v, stored[i]) if i < len(stored) else v for i, v in enumerate(sent)]
    if isinstance(sent, str) and isinstance(stored, str) and sent != stored and (
            sent == redact_text(stored) or sent == MASK):
        return stored
    return sent


class RedactingFilter(logging.Filter):
    """A logging filter that redacts URLs in a record's message and arguments.

    Installed on the `httpx` logger (eas/sources/fetch.py): httpx logs every request's
    full URL, credentials included, at INFO, and instances log at INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redacted_arg(v) for k, v in record.args.items()}
        return True


def _redacted_arg(value: Any) -> Any:
    if isinstance(value, (int, float)) or value is None:
        return value
    text = str(value)
    return redact_text(text) if "://" in text else value


def install_log_filter(logger_name: str) -> None:
    """Redact URLs in everything `logger_name` logs (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
