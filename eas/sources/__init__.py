"""Where models and code come from: local paths, http(s), OSS/S3, archives.

`resolve(source, cache_dir)` makes any source a local path (fetch.py); archives are
unpacked safely (archive.py); object storage goes through objectstore.py.
"""

from eas.sources.archive import ModelSourceError, is_archive
from eas.sources.fetch import resolve

__all__ = ["ModelSourceError", "is_archive", "resolve"]
