"""Where models and code come from: local paths, https, OSS/S3, archives.

`resolve(source, cache_dir)` makes any source a local path (fetch.py); archives are
unpacked safely (archive.py); object storage goes through objectstore.py; credentials
inside URLs are hidden wherever they are shown (redact.py).
"""

from eas.sources.archive import ModelSourceError, is_archive
from eas.sources.fetch import collect_garbage, plain_http_allowed, resolve
from eas.sources.redact import redact_data, redact_text, redact_url, unredacted

__all__ = ["ModelSourceError", "collect_garbage", "is_archive", "plain_http_allowed", "redact_data",
           "redact_text", "redact_url", "resolve", "unredacted"]
