"""`eascmd upload FILE`: put a model into the configured bucket and print the path to use.

Client-side on purpose: the file goes straight from the operator's machine to object
storage (OSS or any S3-compatible store), never through eas-server, so a 10 GB model
does not pass through the control plane. The destination is `--to`, else
EAS_OSS_UPLOAD_PATH; the endpoint and credentials are the same EAS_OSS_* variables the
server reads (eas/sources/objectstore.py). Each file lands under a directory named after its
content digest, so an upload never changes a model that a running service uses.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import click

from eas.sources import objectstore
from eascmd.common import ok


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


@click.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "dest", metavar="URL", default=lambda: os.environ.get(objectstore.ENV_UPLOAD_PATH),
              help=f"Where to put it: oss://bucket/prefix/ or s3://bucket/prefix/ [default: ${objectstore.ENV_UPLOAD_PATH}].")
@click.option("--endpoint", metavar="HOST|URL", default=None,
              help=f"Object storage endpoint [default: ${objectstore.ENV_ENDPOINT}].")
def upload_command(file: Path, dest: str | None, endpoint: str | None) -> None:
    """Upload a model file (or an archive of a model directory) to object storage.

    Prints the oss:// (or s3://) path to put in the service JSON's model_path.
    Credentials: EAS_OSS_ACCESS_KEY_ID and EAS_OSS_ACCESS_KEY_SECRET.

    \b
    Example:
      EAS_OSS_UPLOAD_PATH=oss://my-bucket/models/ eascmd upload model.tar.gz
    """
    if not dest:
        raise click.UsageError(f"say where to upload: --to oss://bucket/prefix/ or set {objectstore.ENV_UPLOAD_PATH}")
    try:
        base = objectstore.parse(dest if dest.endswith("/") else dest + "/")
        target = objectstore.ObjectUrl(base.scheme, base.bucket, f"{base.key}{_digest(file)}/{file.name}")
        ok(f"Uploading {file.name} ({file.stat().st_size} bytes) to {target}")
        objectstore.upload(file, target, endpoint)
    except objectstore.ObjectStoreError as exc:
        raise click.ClickException(str(exc)) from None
    ok(f"File uploaded: {target}")
    ok(f'Use it in the service JSON as "model_path": "{target}"')
