"""The tag store, `ROOT/repositories`: docker/tags.go of 2013 (spec 6.7, 6.8).

It maps repository -> tag -> full image ID and resolves the names users type
(`base`, `base:latest`, an ID prefix) to images.

Runs in: the daemon, on its event loop and in worker threads (import, pull):
hence its lock.

Changed since 2013:
- the file is written atomically (2013 truncated it first, spec 10.2);
- a repository name may start with a registry `host:port/`, so `repo:tag`
  is split at the last `:` not followed by a `/`;
- reloading replaces the map instead of merging into it;
- `rmi` removes the tags of the image it deletes (2013 left them dangling).
"""
from __future__ import annotations

import json
import logging
import os
import threading

from .graph import Graph, Image
from .utils import atomic_write, json_compact, short_id

DEFAULT_TAG = "latest"
log = logging.getLogger("docker0")


def parse_repository_tag(name: str) -> tuple[str, str]:
    """`repo[:tag]` -> (repo, tag); tag is "" when absent."""
    repo, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        return name, ""
    return repo, tag


def validate_repository_name(repo: str) -> None:
    if not repo:
        raise ValueError("Repository name can't be empty")
    host, slash, rest = repo.partition("/")
    if ":" in (rest if slash else host) or (slash and ":" in host and not rest):
        raise ValueError(f"Illegal repository name: {repo}")


def validate_tag_name(tag: str) -> None:
    if not tag:
        raise ValueError("Tag name can't be empty")
    if "/" in tag or ":" in tag:
        raise ValueError(f"Illegal tag name: {tag}")


class ImageNotFound(LookupError):
    """No image by that ID, nor a tag by that name: `run` tries a pull then."""


class TagStore:
    def __init__(self, path: str, graph: Graph) -> None:
        self.path = path
        self.graph = graph
        self.repositories: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        if os.path.exists(path):
            self.reload()
        else:
            self.save()

    def reload(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
            repositories = data["Repositories"] or {}
            repositories = {r: dict(tags) for r, tags in repositories.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise RuntimeError(f"Couldn't create Tag store: {e}") from None
        self.repositories = repositories

    def save(self) -> None:
        ordered = {r: dict(sorted(t.items())) for r, t in sorted(self.repositories.items())}
        atomic_write(self.path, json_compact({"Repositories": ordered}), 0o600)

    def set(self, repo: str, tag: str, image_name: str, force: bool = True) -> None:
        """Point repo:tag at an image. Like 2013, an existing tag is always moved:
        `force` (tag -f) is kept for 2013's signature and changes nothing."""
        image = self.lookup_image(image_name)
        tag = tag or DEFAULT_TAG
        validate_repository_name(repo)
        validate_tag_name(tag)
        with self._lock:
            self.repositories.setdefault(repo, {})[tag] = image.id
            self.save()

    def delete_image(self, image_id: str) -> None:
        """Drop every tag that points at image_id (used by rmi)."""
        with self._lock:
            for repo in list(self.repositories):
                tags = self.repositories[repo]
                for tag in [t for t, i in tags.items() if i == image_id]:
                    del tags[tag]
                if not tags:
                    del self.repositories[repo]
            self.save()

    def get(self, repo: str, tag: str) -> str | None:
        with self._lock:
            return self.repositories.get(repo, {}).get(tag or DEFAULT_TAG)

    def lookup_image(self, name: str) -> Image:
        """Spec 6.7: an ID prefix first, then `repo[:tag]`."""
        try:
            return self.graph.get(name)
        except KeyError:
            pass
        repo, tag = parse_repository_tag(name)
        image_id = self.get(repo, tag)
        if image_id is None:
            raise ImageNotFound(f"Image does not exist: {name}")
        return self.graph.get(image_id)

    def image_name(self, image_id: str) -> str:
        """The alphabetically first `repo:tag` of an image, else its short ID."""
        return min(self.names_by_id().get(image_id, []), default=short_id(image_id))

    def names_by_id(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        with self._lock:
            for repo, tags in self.repositories.items():
                for tag, image_id in tags.items():
                    result.setdefault(image_id, []).append(f"{repo}:{tag}")
        return result

    def tagged_images(self, repository: str = "") -> list[tuple[str, str, Image]]:
        """(repo, tag, image) sorted by name, for `images`; only `repository` if given.

        A tag whose image cannot be loaded is logged and left out (spec 3.7).
        """
        with self._lock:
            tags = [(repo, tag, image_id) for repo, by_tag in sorted(self.repositories.items())
                    if not repository or repo == repository for tag, image_id in sorted(by_tag.items())]
        found = []
        for repo, tag, image_id in tags:
            try:
                found.append((repo, tag, self.graph.get(image_id)))
            except (KeyError, OSError, ValueError) as e:
                log.info("Warning: couldn't load %s from %s/%s: %s", image_id, repo, tag, e)
        return found
