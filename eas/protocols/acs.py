"""Alibaba Cloud AccessKey signatures, as the official OpenAPI SDKs compute them.

Every management SDK generated for EAS (PyPI `alibabacloud-eas20210701`, its Go and Java
twins, the PAI SDK `alipai`, Terraform) signs each request with an AccessKey pair, in
one of two schemes (read from `alibabacloud_tea_openapi`, the SDKs' common core):

- **ACS3-HMAC-SHA256** (what the generated SDKs send by default):
  `Authorization: ACS3-HMAC-SHA256 Credential=<AK>,SignedHeaders=<h1;h2;...>,Signature=<hex>`
  where the signature is `hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\\n" + hex(SHA256(canonical request))))`
  and the canonical request is
  `METHOD\\n<path as sent>\\n<query, keys sorted, values percent-encoded>\\n<each signed
  header "name:value\\n">\\n<signed header names joined by ;>\\n<hex SHA256 of the body>`.
  The body's hash also travels as `x-acs-content-sha256`, the time as `x-acs-date`
  (ISO 8601, UTC) and a one-time `x-acs-signature-nonce`.
- **ROA HMAC-SHA1** (`signature_algorithm="v2"`, what `alipai` configures):
  `Authorization: acs <AK>:<base64(HMAC-SHA1(secret, string to sign))>` over
  `METHOD\\nAccept\\nContent-MD5\\nContent-Type\\nDate\\n` + every `x-acs-*` header as
  `name:value\\n` (names sorted) + the path with its query (keys sorted, values as
  they are, `key` alone for an empty value).

Both sides live here, like eas/protocols/auth.py does for predict signatures: the
server's check (eas/api/signature.py) and our own client's signing (eas/client)
rebuild the same strings, and the official SDKs prove them (tests/sdk/test_mgmt_sdk.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from email.utils import formatdate
from urllib.parse import quote

#: The OpenAPI version every EAS action names (`x-acs-version`).
API_VERSION = "2021-07-01"
ACS3 = "ACS3-HMAC-SHA256"
#: The prefix of a ROA HMAC-SHA1 Authorization header.
ROA_PREFIX = "acs "


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def acs_timestamp(now: float) -> str:
    """`x-acs-date`: UTC, second precision, as the SDKs write it."""
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_nonce() -> str:
    return secrets.token_hex(16)


# -- ACS3-HMAC-SHA256 ----------------------------------------------------------------------------


def acs3_canonical_query(query: Iterable[tuple[str, str]]) -> str:
    """Keys sorted, each value percent-encoded (only `~` and unreserved characters kept),
    keys as they are: what the SDK's `get_canonical_query_string` builds."""
    items = dict(query)
    return "&".join(f"{key}={quote(items[key], safe='~')}" for key in sorted(items))


def acs3_canonical_request(method: str, path: str, query: Iterable[tuple[str, str]],
                           headers: Mapping[str, list[str]], signed_headers: list[str], payload_sha256: str) -> str:
    """The canonical request; `headers` maps lower-case names to every value received."""
    lines = ""
    for name in signed_headers:
        values = sorted(v.strip() for v in headers.get(name, []))
        lines += f"{name}:{','.join(values)}\n"
    return "\n".join([method.upper(), path or "/", acs3_canonical_query(query), lines,
                      ";".join(signed_headers), payload_sha256])


def acs3_signature(secret: str, canonical_request: str) -> str:
    string_to_sign = f"{ACS3}\n{sha256_hex(canonical_request.encode())}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def parse_acs3(authorization: str) -> tuple[str, list[str], str]:
    """(AccessKey id, signed header names, signature) of an ACS3 Authorization header;
    ValueError when it is not one."""
    if not authorization.startswith(ACS3 + " "):
        raise ValueError("not an ACS3-HMAC-SHA256 authorization")
    parts: dict[str, str] = {}
    for part in authorization[len(ACS3) + 1:].split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise ValueError(f"malformed part {part.strip()[:40]!r}")
        parts[key] = value
    try:
        access_key_id, signed, signature = parts["Credential"], parts["SignedHeaders"], parts["Signature"]
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]}") from None
    names = [n for n in signed.split(";") if n]
    if not access_key_id or not names or not signature or any(n != n.lower() for n in names):
        raise ValueError("Credential, SignedHeaders (lower-case names) and Signature are all required")
    return access_key_id, names, signature


def sign_acs3(method: str, path: str, query: Mapping[str, str], headers: dict[str, str], body: bytes,
              access_key_id: str, secret: str, now: float) -> dict[str, str]:
    """The headers to add to a request for it to carry an ACS3 signature, every header
    of `headers` (names lower-case, `host` among them) signed, as the SDKs do."""
    out = {
        **{k.lower(): v for k, v in headers.items()},
        "x-acs-date": acs_timestamp(now),
        "x-acs-signature-nonce": new_nonce(),
        "x-acs-content-sha256": sha256_hex(body),
    }
    signed = sorted(out)
    canonical = acs3_canonical_request(method, path, query.items(), {k: [v] for k, v in out.items()}, signed,
                                       out["x-acs-content-sha256"])
    out["authorization"] = (f"{ACS3} Credential={access_key_id},SignedHeaders={';'.join(signed)},"
                            f"Signature={acs3_signature(secret, canonical)}")
    return out


# -- ROA HMAC-SHA1 ---------------------------------------------------------------------------------


def roa_string_to_sign(method: str, path: str, query: Iterable[tuple[str, str]],
                       headers: Mapping[str, str]) -> str:
    """What a ROA HMAC-SHA1 signature covers; `headers` by lower-case name."""
    head = "\n".join([method.upper(), headers.get("accept", ""), headers.get("content-md5", ""),
                      headers.get("content-type", ""), headers.get("date", "")]) + "\n"
    acs = "".join(f"{name}:{headers[name]}\n" for name in sorted(headers) if name.startswith("x-acs-"))
    items = dict(query)
    resource = path
    if items:
        resource += "?" + "&".join(key if items[key] == "" else f"{key}={items[key]}" for key in sorted(items))
    return head + acs + resource


def roa_signature(secret: str, string_to_sign: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()


def parse_roa(authorization: str) -> tuple[str, str]:
    """(AccessKey id, signature) of `acs <AK>:<signature>`; ValueError otherwise."""
    if not authorization.startswith(ROA_PREFIX):
        raise ValueError("not a ROA authorization")
    access_key_id, sep, signature = authorization[len(ROA_PREFIX):].strip().rpartition(":")
    if not sep or not access_key_id or not signature:
        raise ValueError("expected 'acs <AccessKeyId>:<signature>'")
    return access_key_id, signature


def sign_roa(method: str, path: str, query: Mapping[str, str], headers: dict[str, str],
             access_key_id: str, secret: str, now: float) -> dict[str, str]:
    """The headers of a ROA HMAC-SHA1 signed request (`date`, nonce, signature method)."""
    out = {
        **{k.lower(): v for k, v in headers.items()},
        "date": formatdate(now, usegmt=True),
        "x-acs-signature-nonce": new_nonce(),
        "x-acs-signature-method": "HMAC-SHA1",
        "x-acs-signature-version": "1.0",
    }
    signature = roa_signature(secret, roa_string_to_sign(method, path, query.items(), out))
    out["authorization"] = f"{ROA_PREFIX}{access_key_id}:{signature}"
    return out
