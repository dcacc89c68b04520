"""The image graph, `ROOT/graph/<ID>/{json,layer/}`: graph.go and image.go of 2013.

An image is a directory holding its JSON record and its layer, a plain tree of
files in which deletions are `.wh.<name>` files (the AUFS convention, kept on
disk and in tarballs). Images are created in `graph/:tmp:/<ID>` and renamed
into place, so a half-written image is never visible (spec 6.3).

Changed since 2013: whatever a crash left in `:tmp:` is removed at start-up.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import VERSION
from .utils import TruncIndex, atomic_write, generate_id, json_compact, now_string

TMP = ":tmp:"


@dataclass
class Image:
    """The image JSON record (spec 6.1); empty members are left out on disk."""
    id: str
    created: str
    parent: str = ""
    comment: str = ""
    container: str = ""
    container_config: dict = field(default_factory=dict)
    docker_version: str = ""

    def to_dict(self) -> dict:
        record = {"id": self.id, "parent": self.parent, "comment": self.comment,
                  "created": self.created, "container": self.container,
                  "container_config": self.container_config,
                  "docker_version": self.docker_version}
        return {k: v for k, v in record.items() if v or k == "container_config"}

    @classmethod
    def from_dict(cls, record: dict) -> "Image":
        return cls(id=record.get("id", ""), created=record.get("created", ""),
                   parent=record.get("parent", ""), comment=record.get("comment", ""),
                   container=record.get("container", ""),
                   container_config=record.get("container_config") or {},
                   docker_version=record.get("docker_version", ""))


class Graph:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, 0o700, exist_ok=True)
        shutil.rmtree(os.path.join(root, TMP), ignore_errors=True)
        self.index = TruncIndex(n for n in os.listdir(root) if self._is_image_dir(n))

    def _is_image_dir(self, name: str) -> bool:
        return (":" not in name and os.path.isfile(os.path.join(self.root, name, "json"))
                and os.path.isdir(os.path.join(self.root, name, "layer")))

    def image_path(self, image_id: str) -> str:
        return os.path.join(self.root, image_id)

    def layer_path(self, image_id: str) -> str:
        return os.path.join(self.root, image_id, "layer")

    def exists(self, image_id: str) -> bool:
        return os.path.isdir(self.image_path(image_id))

    def get(self, name: str) -> Image:
        """Load an image by full ID or unique ID prefix; KeyError otherwise."""
        image_id = self.index.get(name)
        with open(os.path.join(self.image_path(image_id), "json"), "rb") as f:
            image = Image.from_dict(json.loads(f.read()))
        if image.id != image_id:
            raise KeyError(f"Image stored at '{image_id}' has wrong id '{image.id}'")
        return image

    def all(self) -> Iterator[Image]:
        for image_id in list(self.index._ids):
            try:
                yield self.get(image_id)
            except (KeyError, OSError, ValueError):
                continue

    def count(self) -> int:
        return len(self.index._ids)

    def create(self, fill_layer: Callable[[str], None], *, comment: str = "",
               parent: str = "", container: str = "", container_config: dict | None = None,
               image_id: str | None = None, created: str | None = None) -> Image:
        """Make a new image whose layer `fill_layer(path)` writes, then publish it."""
        image = Image(id=image_id or generate_id(), created=created or now_string(),
                      parent=parent, comment=comment, container=container,
                      container_config=container_config or {}, docker_version=VERSION)
        self.register(image, fill_layer)
        return image

    def register(self, image: Image, fill_layer: Callable[[str], None]) -> None:
        if not image.id:
            raise ValueError("Image id can't be empty")
        if ":" in image.id:
            raise ValueError("Invalid character in image id: ':'")
        if self.exists(image.id):
            raise ValueError(f"Image {image.id} already exists")
        staging = os.path.join(self.root, TMP, image.id)
        os.makedirs(os.path.join(self.root, TMP), 0o700, exist_ok=True)
        try:
            os.mkdir(staging, 0o700)
            os.mkdir(os.path.join(staging, "layer"), 0o700)
            fill_layer(os.path.join(staging, "layer"))
            atomic_write(os.path.join(staging, "json"), json_compact(image.to_dict()), 0o600)
            os.rename(staging, self.image_path(image.id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.index.add(image.id)

    def parents(self, image: Image) -> Iterator[Image]:
        """The image itself, then its parent, and so on up to the root."""
        yield image
        while image.parent:
            try:
                image = self.get(image.parent)
            except (KeyError, OSError, ValueError) as e:
                raise LookupError(f"Error while getting parent image: {_msg(e)}") from None
            yield image


def _msg(e: BaseException) -> str:
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)
