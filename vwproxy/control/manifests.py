"""Reading a folder of kcp YAML manifests, with errors that name the file and the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vwproxy.kube import bodies, errors

# libyaml's safe loader where built in (about 10x the pure-Python one), else the pure one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(Exception):
    """A manifest that cannot be used; the message names the file, document and field."""


BACKENDS_FILE = "backends.yaml"  # the backends, read by vwproxy.upstream.backends; not a manifest


@dataclass(frozen=True)
class Manifest:
    source: str  # "file.yaml#2" (document index within the file, from 1)
    obj: dict[str, Any]
    folder: str = "root"  # the sub-folder it came from (a workspace path), or root

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))


def load_folder(folder: Path) -> list[Manifest]:
    """Every object in the `*.yaml`/`*.yml` files of `folder` and its sub-folders, in name order."""
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a directory")
    out: list[Manifest] = []
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file() and p.name != BACKENDS_FILE)
    for path in files:
        sub = path.parent.relative_to(folder).parts
        where_folder = sub[0] if sub else "root"
        try:
            text = path.read_bytes()
            if bodies.yaml_nesting(text) > bodies.MAX_YAML_NESTING:
                raise ManifestError(f"{path}: nested deeper than {bodies.MAX_YAML_NESTING} levels")
            # Plain JSON values, bounded: a manifest's aliases expand no further than a request body's.
            documents = bodies.json_documents(text)
            if documents is None:
                documents = [bodies.plain_json(doc) for doc in yaml.load_all(text, Loader=_LOADER)]
        except errors.StatusError as exc:
            raise ManifestError(f"{path}: {exc.message}") from None
        except yaml.YAMLError as exc:
            # Only the problem and where: PyYAML's own text quotes the line, which may hold a secret.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ManifestError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or 'cannot parse'}") from None
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from None
        expanded: list[Any] = []
        for doc in documents:
            # A kubectl-style `kind: List` stands for its items.
            if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                expanded.extend(doc["items"])
            else:
                expanded.append(doc)
        for index, doc in enumerate(expanded, start=1):
            if doc is None:
                continue
            where = f"{path}#{index}"
            if not isinstance(doc, dict):
                raise ManifestError(f"{where}: a manifest must be a YAML mapping")
            for field in ("apiVersion", "kind"):
                if not isinstance(doc.get(field), str) or not doc[field]:
                    raise ManifestError(f"{where}: field {field} is required")
            md = doc.get("metadata")
            if not isinstance(md, dict) or not isinstance(md.get("name"), str) or not md["name"]:
                raise ManifestError(f"{where}: field metadata.name is required")
            annotations = md.get("annotations")
            if annotations is not None and (not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values())):
                raise ManifestError(f"{where}: field metadata.annotations must map strings to strings")
            out.append(Manifest(where, doc, where_folder))
    return out
