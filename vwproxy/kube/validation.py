"""Validation of object metadata the way kube-apiserver does it, as `details.causes` entries."""

from __future__ import annotations

import re
from typing import Any

from vwproxy.kube.errors import Cause

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

MAX_ANNOTATIONS_BYTES = 256 * 1024  # kube-apiserver's TotalAnnotationSizeLimitB

# How a resource's object names are checked (apimachinery's NameIsDNSSubdomain & co.).
NAME_SUBDOMAIN = "subdomain"
NAME_LABEL = "label"
NAME_PATH_SEGMENT = "path"


def dns1123_label(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
            "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    return None


def dns1123_subdomain(value: str) -> str | None:
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
            "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return None


def path_segment_name(value: str) -> str | None:
    if value in (".", ".."):
        return f"may not be '{value}'"
    for bad in ("/", "%"):
        if bad in value:
            return f"may not contain '{bad}'"
    return None


def qualified_name(value: str) -> str | None:
    """A label or annotation key: optional DNS-subdomain prefix, `/`, a name of at most 63."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return "prefix part must be non-empty"
        problem = dns1123_subdomain(prefix)
        if problem:
            return "prefix part " + problem
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME_PART.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def label_value(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return None


def check_name(value: str, rule: str) -> str | None:
    if rule == NAME_LABEL:
        return dns1123_label(value)
    if rule == NAME_PATH_SEGMENT:
        return path_segment_name(value)
    return dns1123_subdomain(value)


def validate_metadata(meta: dict[str, Any], name_rule: str, namespaced: bool) -> list[Cause]:
    """Causes for everything wrong in `metadata` (name already resolved from generateName)."""
    causes: list[Cause] = []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        causes.append(Cause("FieldValueRequired", "name or generateName is required", "metadata.name"))
    else:
        problem = check_name(name, name_rule)
        if problem:
            causes.append(Cause("FieldValueInvalid", f'Invalid value: "{name}": {problem}', "metadata.name"))
    if not namespaced and meta.get("namespace"):
        causes.append(Cause("FieldValueForbidden", "not allowed on this type", "metadata.namespace"))
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            causes.append(Cause("FieldValueInvalid", "must be a map of strings", "metadata.labels"))
        else:
            for key, value in labels.items():
                problem = qualified_name(key)
                if problem:
                    causes.append(Cause("FieldValueInvalid", f'Invalid value: "{key}": {problem}', "metadata.labels"))
                if not isinstance(value, str):
                    causes.append(Cause("FieldValueInvalid", "label values must be strings", f"metadata.labels.{key}"))
                    continue
                problem = label_value(value)
                if problem:
                    causes.append(Cause("FieldValueInvalid", f'Invalid value: "{value}": {problem}', "metadata.labels"))
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            causes.append(Cause("FieldValueInvalid", "must be a map of strings", "metadata.annotations"))
        else:
            size = 0
            for key, value in annotations.items():
                problem = qualified_name(key)
                if problem:
                    causes.append(Cause("FieldValueInvalid", f'Invalid value: "{key}": {problem}', "metadata.annotations"))
                if not isinstance(value, str):
                    causes.append(Cause("FieldValueInvalid", "annotation values must be strings", f"metadata.annotations.{key}"))
                    continue
                size += len(key) + len(value)
            if size > MAX_ANNOTATIONS_BYTES:
                causes.append(
                    Cause("FieldValueTooLong", f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes", "metadata.annotations")
                )
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers):
            causes.append(Cause("FieldValueInvalid", "must be a list of strings", "metadata.finalizers"))
        else:
            for i, fin in enumerate(finalizers):
                problem = qualified_name(fin)
                if problem:
                    causes.append(Cause("FieldValueInvalid", f'Invalid value: "{fin}": {problem}', f"metadata.finalizers[{i}]"))
    owners = meta.get("ownerReferences")
    if owners is not None:
        if not isinstance(owners, list):
            causes.append(Cause("FieldValueInvalid", "must be a list", "metadata.ownerReferences"))
        else:
            for i, ref in enumerate(owners):
                if not isinstance(ref, dict):
                    causes.append(Cause("FieldValueInvalid", "must be an object", f"metadata.ownerReferences[{i}]"))
                    continue
                for key in ("apiVersion", "kind", "name", "uid"):
                    if not isinstance(ref.get(key), str) or not ref.get(key):
                        causes.append(Cause("FieldValueRequired", "Required value", f"metadata.ownerReferences[{i}].{key}"))
    return causes
