"""The label config side: parse_label_config, LabelSchema, to_regions."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from raner_backend.labeling import LabelConfigError, LabelSchema, parse_label_config, to_regions

ROOT = Path(__file__).resolve().parents[1]


def config(labels: str, *, labels_attrs='name="label" toName="text"', text='<Text name="text" value="$text"/>'):
    body = "".join(f'<Label value="{x}"/>' for x in labels.split(",")) if labels else ""
    return f"<View><Labels {labels_attrs}>{body}</Labels>{text}</View>"


def entity(start, end, label, score=0.9, text=""):
    return SimpleNamespace(start=start, end=end, label=label, score=score, text=text)


# --- parse_label_config: configs that work ---------------------------------------------------


def test_default_label_config_file():
    schema = parse_label_config((ROOT / "label_config.xml").read_text(encoding="utf-8"))
    assert schema == LabelSchema("label", "text", "text", {"PER": "PER", "LOC": "LOC", "ORG": "ORG"})
    assert schema.from_model == {"PER": "PER", "LOC": "LOC", "ORG": "ORG"}
    assert hash(schema) == hash(parse_label_config(config("PER,LOC,ORG")))


def test_default_label_config_passes_the_sdk_validation():
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface((ROOT / "label_config.xml").read_text(encoding="utf-8"))
    interface.validate()  # hotkey and hint attributes are accepted by the config schema
    attrs = interface.get_control("label").labels_attrs
    assert attrs["PER"].attr["hint"].startswith("人名")


def test_chinese_label_names():
    xml = config("人名,地名,机构名", labels_attrs='name="ner" toName="doc"',
                 text='<Text name="doc" value="$sentence"/>')
    schema = parse_label_config(xml)
    assert (schema.from_name, schema.to_name, schema.data_key) == ("ner", "doc", "sentence")
    assert schema.to_model == {"人名": "PER", "地名": "LOC", "机构名": "ORG"}
    assert schema.from_model == {"PER": "人名", "LOC": "地名", "ORG": "机构名"}


def test_english_aliases_case_insensitive():
    schema = parse_label_config(config("Person,GPE,org"))
    assert schema.to_model == {"Person": "PER", "GPE": "LOC", "org": "ORG"}


def test_labels_of_no_default_type_are_types_of_their_own_and_first_label_wins_from_model():
    schema = parse_label_config(config("人物,MISC,PERSON,地点,组织机构"))
    assert schema.to_model == {"人物": "PER", "MISC": "MISC", "PERSON": "PER", "地点": "LOC", "组织机构": "ORG"}
    assert schema.from_model == {"PER": "人物", "MISC": "MISC", "LOC": "地点", "ORG": "组织机构"}
    assert schema.entity_types == ("PER", "MISC", "LOC", "ORG")


def test_label_map_maps_and_overrides():
    schema = parse_label_config(config("人名,公司,GPE,其他"), label_map={"公司": "ORG", "GPE": "org"})
    assert schema.to_model == {"人名": "PER", "公司": "ORG", "GPE": "ORG", "其他": "其他"}


def test_label_alias_attribute_is_the_label_name():
    xml = '<View><Labels name="label" toName="text"><Label value="人名" alias="P"/></Labels>' \
          '<Text name="text" value="$text"/></View>'
    # Label Studio saves the alias in results, so the alias is the config label name
    assert parse_label_config(xml, label_map={"P": "PER"}).to_model == {"P": "PER"}


def test_xml_declaration_and_lowercase_tags():
    xml = '<?xml version="1.0" encoding="utf-8"?>\n' + config("PER")
    assert parse_label_config(xml).to_model == {"PER": "PER"}
    lower = '<View><labels name="l" toName="t"><label value="LOC"/></labels><text name="t" value="$x"/></View>'
    assert parse_label_config(lower).to_model == {"LOC": "LOC"}


def test_other_controls_are_ignored():
    xml = ('<View><Text name="text" value="$text"/><Labels name="label" toName="text">'
           '<Label value="PER"/></Labels><Choices name="sentiment" toName="text">'
           '<Choice value="pos"/></Choices><Relations><Relation value="of"/></Relations></View>')
    assert parse_label_config(xml).from_name == "label"


def test_custom_model_types():
    schema = parse_label_config(config("PER,LOC,ORG,地点"), model_types=("PER", "LOC"))
    assert schema.to_model == {"PER": "PER", "LOC": "LOC", "ORG": "ORG", "地点": "LOC"}


# --- parse_label_config: configs that fail ------------------------------------------------------


def test_a_config_of_new_types_only_is_served():
    schema = parse_label_config(config("药品,疾病,症状"))
    assert schema.to_model == {"药品": "药品", "疾病": "疾病", "症状": "症状"}


def test_a_labels_control_without_labels_is_refused():
    xml = '<View><Labels name="label" toName="text"></Labels><Text name="text" value="$text"/></View>'
    with pytest.raises(LabelConfigError, match="no <Label"):
        parse_label_config(xml)


def test_label_map_entries_for_other_projects_labels_are_ignored():
    assert parse_label_config(config("人物"), label_map={"人名": "PER"}).to_model == {"人物": "PER"}


def test_two_labels_controls():
    xml = ('<View><Labels name="first" toName="text"><Label value="PER"/></Labels>'
           '<Labels name="second" toName="text"><Label value="LOC"/></Labels>'
           '<Text name="text" value="$text"/></View>')
    with pytest.raises(LabelConfigError, match="first") as info:
        parse_label_config(xml)
    assert "second" in str(info.value)


def test_no_text_object():
    xml = '<View><Labels name="label" toName="img"><Label value="PER"/></Labels><Image name="img" value="$image"/></View>'
    with pytest.raises(LabelConfigError, match="no <Text>"):
        parse_label_config(xml)


def test_labels_not_on_a_text():
    xml = ('<View><Labels name="label" toName="html"><Label value="PER"/></Labels>'
           '<HyperText name="html" value="$html"/><Text name="text" value="$text"/></View>')
    with pytest.raises(LabelConfigError, match="HyperText"):
        parse_label_config(xml)
    missing = '<View><Labels name="label" toName="nope"><Label value="PER"/></Labels><Text name="text" value="$text"/></View>'
    with pytest.raises(LabelConfigError, match="nope"):
        parse_label_config(missing)


def test_no_labels_control():
    xml = '<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>'
    with pytest.raises(LabelConfigError, match="no <Labels>"):
        parse_label_config(xml)


@pytest.mark.parametrize("xml", ['<View><Labels name="label" toName="text">', "", "   ", "not xml at all",
                                 None, 42])
def test_broken_xml(xml):
    with pytest.raises(LabelConfigError) as info:
        parse_label_config(xml)
    assert isinstance(info.value, ValueError)


def test_text_value_must_be_a_variable():
    with pytest.raises(LabelConfigError, match=r"\$text"):
        parse_label_config(config("PER", text='<Text name="text" value="plain"/>'))


@pytest.mark.parametrize("label_map, words", [({"PER": "MISC"}, ["MISC", "PER, LOC, ORG"])])
def test_bad_label_map(label_map, words):
    with pytest.raises(LabelConfigError) as info:
        parse_label_config(config("PER,LOC"), label_map=label_map)
    assert all(w in str(info.value) for w in words)


# --- to_regions ---------------------------------------------------------------------------------


def test_to_regions_emoji_offsets_are_code_points():
    schema = parse_label_config(config("人名,地名"))
    text = "马云😀在杭州"
    regions = to_regions(schema, text, [entity(0, 2, "PER", 0.8), entity(4, 6, "LOC", 0.7),
                                        entity(2, 3, "ORG", 0.9)])
    assert [r["value"] for r in regions] == [
        {"start": 0, "end": 2, "text": "马云", "labels": ["人名"]},
        {"start": 4, "end": 6, "text": "杭州", "labels": ["地名"]},
    ]  # ORG has no config label: dropped
    region = regions[1]
    assert (region["from_name"], region["to_name"], region["type"]) == ("label", "text", "labels")
    assert isinstance(region["score"], float) and region["score"] == pytest.approx(0.7)
    json.dumps(regions)


def test_to_regions_ids_are_short_and_deterministic():
    schema = parse_label_config(config("PER,LOC"))
    text = "马云在杭州"
    first = to_regions(schema, text, [entity(0, 2, "PER"), entity(3, 5, "LOC")])
    again = to_regions(schema, text, [entity(0, 2, "PER", 0.1), entity(3, 5, "LOC", 0.2)])
    assert [r["id"] for r in first] == [r["id"] for r in again]
    assert len({r["id"] for r in first}) == 2 and all(0 < len(r["id"]) <= 16 for r in first)
    other = to_regions(schema, text, [entity(0, 2, "LOC")])[0]["id"]
    assert other != first[0]["id"]
    assert to_regions(schema, "马云在上海", [entity(0, 2, "PER")])[0]["id"] != first[0]["id"]


def test_to_regions_are_valid_predictions_for_the_sdk():
    from label_studio_sdk.label_interface import LabelInterface

    xml = (ROOT / "label_config.xml").read_text(encoding="utf-8")
    regions = to_regions(parse_label_config(xml), "马云😀在杭州",
                         [entity(0, 2, "PER", float("nan")), entity(4, 6, "LOC"), entity(5, 9, "ORG")])
    assert len(regions) == 2 and regions[0]["score"] == 0.0  # out-of-range span dropped, NaN -> 0
    interface = LabelInterface(xml)
    assert interface.validate_prediction({"model_version": "v", "score": 0.5, "result": regions},
                                         return_errors=True) == []


def test_a_label_saved_under_its_alias_keeps_the_type_its_value_names():
    xml = ('<View><Labels name="l" toName="t"><Label value="Person" alias="P"/><Label value="地名"/>'
           '<Label value="Drug" alias="D"/></Labels><Text name="t" value="$text"/></View>')
    assert parse_label_config(xml).to_model == {"P": "PER", "地名": "LOC", "D": "D"}
    assert parse_label_config(xml, label_map={"Drug": "ORG"}).to_model["D"] == "ORG", "LABEL_MAP by value"
    assert parse_label_config(xml, label_map={"D": "ORG"}).to_model["D"] == "ORG", "LABEL_MAP by alias"
    chinese = xml.replace('value="Person" alias="P"', 'value="Person" alias="人"')
    mapped = parse_label_config(chinese, label_map={"Person": "LOC"}).to_model
    assert mapped["人"] == "LOC", "the user's LABEL_MAP before a built-in name"


def test_a_text_loaded_from_a_url_is_refused_with_the_reason():
    xml = ('<View><Labels name="l" toName="t"><Label value="PER"/></Labels>'
           '<Text name="t" value="$url" valueType="url"/></View>')
    with pytest.raises(LabelConfigError, match="valueType='url'"):
        parse_label_config(xml)
    assert parse_label_config(xml.replace(' valueType="url"', ' valueType="text"')).data_key == "url"
