"""The plantd.v1 proto comments, kept beside the generated code (``plantd/v1/comments.json``).

protoc strips source info from the generated ``*_pb2`` modules, so at run time no descriptor
has its comments. ``make protos`` compiles a descriptor image with source info and writes the
comments of every message, field, enum (value), service and method by full name with
:func:`write`; the OpenAPI document (plantd.gateway.rest.openapi) reads them with
:func:`packaged`. ``make protos-check`` regenerates the file like the code, so it cannot
drift from the protos.

    python -m plantd.gateway.rest.proto_comments IMAGE.binpb OUT.json
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2

PACKAGE = "plantd.v1"
FILE_NAME = "comments.json"


def extract(image: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """The comments of the image's plantd.v1 files, by element full name."""
    from plantd.gateway.rest.openapi import comments_of  # the one parser of comment locations

    out: dict[str, str] = {}
    for proto in image.file:
        if proto.package == PACKAGE:
            out.update(comments_of(proto))
    return out


def write(image_path: Path, out_path: Path) -> int:
    image = descriptor_pb2.FileDescriptorSet.FromString(image_path.read_bytes())
    comments = extract(image)
    if not comments:
        print(
            f"{image_path}: no comments (compiled without --include_source_info?)", file=sys.stderr
        )
        return 1
    text = json.dumps(comments, indent=1, sort_keys=True, ensure_ascii=False)
    out_path.write_text(text + "\n", encoding="utf-8")
    return 0


@functools.cache
def packaged() -> Mapping[str, str]:
    """The comments shipped with the generated code ({} if the file is missing)."""
    try:
        text = resources.files(PACKAGE).joinpath(FILE_NAME).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    loaded: dict[str, str] = json.loads(text)
    return loaded


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    return write(Path(args[0]), Path(args[1]))


if __name__ == "__main__":
    raise SystemExit(main())
