"""The label config side: which control/object/data key to use and how config labels map to model
entity types, and turning model entities into Label Studio regions.

A config label that names one of the default model's types (by name, ``LABEL_MAP`` or a built-in
alias such as 人名 or GPE) starts with that type's knowledge; every other label is an entity type
of its own, named as the label, that a project's model learns from its annotations. Until it
has, predictions simply have no region of that label.

This module knows nothing of models: entities are any objects with ``.start .end .label .text
.score`` (``label`` a model entity type such as ``PER``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

DEFAULT_MODEL_TYPES: tuple[str, ...] = ("PER", "LOC", "ORG")

# Built-in names of the entity types, compared after ``_norm`` (stripped, case-folded).
_ALIASES: dict[str, tuple[str, ...]] = {
    "PER": ("per", "pers", "person", "persons", "people", "nr",
            "人名", "人物", "姓名", "人"),
    "LOC": ("loc", "location", "locations", "gpe", "place", "ns",
            "地名", "地点", "位置", "地理", "地區", "地點", "地理位置"),
    "ORG": ("org", "organization", "organisation", "organizations", "organisations", "nt",
            "机构名", "机构", "组织", "组织机构", "组织名", "机构组织",
            "機構名", "機構", "組織", "組織機構"),
}
BUILTIN_ALIASES: dict[str, str] = {alias: kind for kind, names in _ALIASES.items() for alias in names}
"""normalised config label name -> model entity type."""

_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)


class LabelConfigError(ValueError):
    """The label config cannot be used for Chinese NER with this backend (the message says why)."""


@dataclass(frozen=True)
class LabelSchema:
    """What the backend needs from a label config.

    ``to_model`` maps each config label to its model entity type, in config order: a default type
    it names, or else a type of its own named as the label.
    """

    from_name: str
    to_name: str
    data_key: str
    to_model: dict[str, str]

    @property
    def from_model(self) -> dict[str, str]:
        """Model entity type -> config label (the first in config order where several map to one)."""
        out: dict[str, str] = {}
        for label, kind in self.to_model.items():
            out.setdefault(kind, label)
        return out

    @property
    def entity_types(self) -> tuple[str, ...]:
        """The model entity types the project labels, in config order."""
        return tuple(dict.fromkeys(self.to_model.values()))

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash((self.from_name, self.to_name, self.data_key, tuple(self.to_model.items())))


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def parse_label_config(
    xml: str,
    model_types: Sequence[str] = DEFAULT_MODEL_TYPES,
    label_map: Mapping[str, str] | None = None,
) -> LabelSchema:
    """Find the one ``<Labels>`` control tied to a ``<Text>`` object and map its labels to
    ``model_types`` (``label_map``, then exact/case-insensitive name, then built-in aliases); a
    label that maps to none of them is an entity type of its own.

    Raises :class:`LabelConfigError` when the config cannot be used.
    """
    from label_studio_sdk.label_interface import LabelInterface

    model_types = tuple(model_types)
    if not isinstance(xml, str):
        raise LabelConfigError(f"the label config must be an XML string, not {type(xml).__name__}")
    # lxml refuses a str that carries an encoding declaration; Label Studio accepts one.
    xml = _XML_DECLARATION.sub("", xml.lstrip("\ufeff"), count=1)
    if not xml.strip():
        raise LabelConfigError("the label config is empty")
    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # the SDK's XML error is not a ValueError; lxml raises ValueError
        raise LabelConfigError(f"the label config is not valid XML: {exc}") from exc

    controls = list(interface.controls or [])
    objects = {obj.name: obj for obj in (interface.objects or [])}
    labels_controls = [c for c in controls if (c.tag or "").lower() == "labels"]
    texts = {name: obj for name, obj in objects.items() if (obj.tag or "").lower() == "text"}

    if not labels_controls:
        kinds = sorted({c.tag for c in controls})
        found = f" (found only: {', '.join(kinds)})" if kinds else ""
        raise LabelConfigError(
            "the label config has no <Labels> control; NER needs "
            '<Labels name="label" toName="text"> with <Label value="..."/> children'
            f" tied to a <Text> object{found}"
        )
    if not texts:
        raise LabelConfigError(
            "the label config has no <Text> object; NER needs e.g. "
            '<Text name="text" value="$text"/> that the <Labels> control points to'
        )

    tied = [c for c in labels_controls if any(n in texts for n in c.to_name or [])]
    if len(tied) > 1:
        names = ", ".join(repr(c.name) for c in tied)
        raise LabelConfigError(
            f"the label config has {len(tied)} <Labels> controls on <Text> objects ({names}); "
            "this backend supports exactly one"
        )
    if not tied:
        described = "; ".join(
            f"<Labels name={c.name!r}> has toName={','.join(c.to_name or [])!r}, which "
            + ("is " + ", ".join(
                f"a <{objects[n].tag}>" if n in objects else f"{n!r}: no such object"
                for n in c.to_name or []) if c.to_name else "is empty")
            for c in labels_controls
        )
        raise LabelConfigError(f"no <Labels> control points to a <Text> object: {described}")

    control = tied[0]
    text_names = [n for n in control.to_name if n in texts]
    if len(text_names) > 1:
        raise LabelConfigError(
            f"<Labels name={control.name!r}> points to several <Text> objects "
            f"({', '.join(map(repr, text_names))}); this backend supports exactly one"
        )
    text = texts[text_names[0]]
    value = text.value or ""
    if not (value.startswith("$") and len(value) > 1):
        raise LabelConfigError(
            f"<Text name={text.name!r}> has value={value!r}; it must name a task data field, "
            'e.g. value="$text"'
        )

    value_type = str((getattr(text, "attr", None) or {}).get("valueType") or "text")
    if value_type.lower() != "text":
        raise LabelConfigError(
            f"<Text name={text.name!r}> has valueType={value_type!r}: Label Studio then loads the text from the "
            f"URL in data.{value[1:]}, which this backend does not fetch; import the text itself "
            '(valueType="text", the default)'
        )
    config_labels = _control_labels(interface, control)
    to_model = _map_labels(config_labels, model_types, label_map, control.name)
    return LabelSchema(from_name=control.name, to_name=text.name, data_key=value[1:],
                       to_model=to_model)


def _control_labels(interface, control) -> dict[str, str]:
    """The control's labels in config order, as Label Studio saves them (``alias`` over ``value``),
    each with its ``value`` (a label ``<Label value="Person" alias="P"/>`` is saved as P and still
    names a person)."""
    attrs = getattr(control, "labels_attrs", None) or {}
    labels = {str(v): str(getattr(attrs.get(v), "attr", {}).get("value") or v) for v in (control.labels or [])}
    if labels:
        return labels
    # The SDK only recognises ``<Label>`` spelled that way; Label Studio's editor reads tag names
    # case-insensitively. Read the children of this control from the parsed tree ourselves.
    tree = getattr(interface, "_tree", None)
    if tree is None:
        return {}
    for element in tree.iter():
        if isinstance(element.tag, str) and element.attrib.get("name") == control.name:
            out: dict[str, str] = {}
            for child in element.iter():
                if child is element or not isinstance(child.tag, str):
                    continue
                if child.tag.lower() == "label":
                    name = child.attrib.get("alias") or child.attrib.get("value")
                    if name:
                        out.setdefault(name, child.attrib.get("value") or name)
            return out
    return {}


def _map_labels(
    config_labels: Mapping[str, str],
    model_types: tuple[str, ...],
    label_map: Mapping[str, str] | None,
    control_name: str,
) -> dict[str, str]:
    """``config_labels``: each label as saved (alias or value) -> its value. A label maps by
    ``LABEL_MAP`` (on its saved name or its value), else by a model type's name or a built-in alias."""
    if not config_labels:
        raise LabelConfigError(f"<Labels name={control_name!r}> has no <Label value=\"...\"/> children")
    by_norm_type = {_norm(t): t for t in model_types}
    to_model: dict[str, str] = {}
    for label, value in config_labels.items():
        kind = _mapped(tuple(dict.fromkeys((label, value))), by_norm_type, model_types, label_map)
        if kind is not None:
            to_model[label] = kind

    new = [label for label in config_labels if label not in to_model]
    if new:
        log.info("label config: %s are entity types of the project's own (learned from its annotations; "
                 "set LABEL_MAP to map a label to one of %s)", ", ".join(map(repr, new)), ", ".join(model_types))
    return {label: to_model.get(label, label) for label in config_labels}


def _mapped(names: tuple[str, ...], by_norm_type: Mapping[str, str], model_types: tuple[str, ...],
            label_map: Mapping[str, str] | None) -> str | None:
    """The model type one label's names give: the user's ``LABEL_MAP`` before any built-in name."""
    for name in names:
        if label_map and name in label_map:
            kind = by_norm_type.get(_norm(str(label_map[name])))
            if kind is None:
                raise LabelConfigError(
                    f"LABEL_MAP maps {name!r} to {label_map[name]!r}, which is not a model entity type "
                    f"({', '.join(model_types)})"
                )
            return kind
    for name in names:
        key = _norm(name)
        kind = by_norm_type.get(key) or BUILTIN_ALIASES.get(key)
        if kind in model_types:
            return kind
    return None


def region_id(text: str, start: int, end: int, label: str) -> str:
    """A short id, the same for the same text, span and label."""
    digest = hashlib.sha1(f"{start}:{end}:{label}\x00{text}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:10]


def to_regions(schema: LabelSchema, text: str, entities: Iterable) -> list[dict]:
    """Label Studio ``labels`` regions for ``entities`` (model entity types, code-point offsets).

    Entities whose type has no config label, or whose span does not fit ``text``, are left out.
    """
    from_model = schema.from_model
    regions = []
    for entity in entities:
        label = from_model.get(entity.label)
        if label is None:
            continue
        start, end = int(entity.start), int(entity.end)
        if not 0 <= start < end <= len(text):
            log.warning("dropping entity %s [%d, %d) outside a text of length %d",
                        entity.label, start, end, len(text))
            continue
        score = float(entity.score) if entity.score is not None else 0.0
        if not math.isfinite(score):
            score = 0.0
        regions.append({
            "id": region_id(text, start, end, label),
            "from_name": schema.from_name,
            "to_name": schema.to_name,
            "type": "labels",
            "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]},
            "score": score,
        })
    return regions


DEFAULT_LABEL_CONFIG = """<View>
  <Labels name="label" toName="text">
    <Label value="PER"/>
    <Label value="LOC"/>
    <Label value="ORG"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""
