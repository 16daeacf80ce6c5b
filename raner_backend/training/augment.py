"""Modern-text augmentation of a 1990s news corpus.

MSRA has no Latin names, no brands of this century and no social-media writing, so a model
trained on it alone tags ``Tim Cook`` as a person and an organisation and misses ``OpenAI``.
Augmented copies of training sentences swap entities for others of the same type (Latin
and recent Chinese names of people, companies, clubs and places), put spaces around Latin names
as people write them, and add social-media marks (``@`` before a person, a hashtag topic,
emoji). Spans are rebuilt from the edits, so every augmented sentence stays exactly labelled.
"""
from __future__ import annotations

import random
from typing import Sequence

from ..model.data import Example
from ..model.tags import Span

SURFACES: dict[str, tuple[str, ...]] = {
    "PER": ("Taylor Swift", "Jensen Huang", "Sam Altman", "Mark Zuckerberg", "Bill Gates", "Satya Nadella",
            "Jeff Bezos", "Cristiano Ronaldo", "LeBron James", "Emma Watson", "Greta Thunberg", "Angela Merkel",
            "Joe Biden", "Vladimir Putin", "Lisa Su", "Sundar Pichai", "Warren Buffett", "Novak Djokovic",
            "Serena Williams", "Yann LeCun", "Geoffrey Hinton", "Andrej Karpathy", "Kylian Mbappé", "Erling Haaland",
            "Stephen Curry", "Lady Gaga", "Keanu Reeves", "Mr. Beast", "易烊千玺", "王一博", "张艺兴", "杨幂", "迪丽热巴",
            "刘强东", "王兴", "张一鸣", "黄峥", "李彦宏", "丁磊", "董明珠", "孙颖莎", "樊振东", "全红婵", "苏炳添",
            "郑钦文", "许家印"),
    "ORG": ("OpenAI", "Google", "Microsoft", "NVIDIA", "Tesla", "SpaceX", "Meta", "Amazon", "Netflix",
            "Samsung", "Sony", "Intel", "AMD", "IBM", "Uber", "Airbnb", "Anthropic", "DeepMind",
            "Real Madrid", "Manchester United", "FC Barcelona", "NBA", "FIFA", "NASA", "MIT", "Stanford University",
            "BMW", "Toyota", "Nike", "Starbucks", "Goldman Sachs", "JPMorgan", "Bloomberg", "Reuters", "BBC",
            "字节跳动", "拼多多", "京东", "美团", "蔚来汽车", "理想汽车", "哔哩哔哩", "大疆", "中芯国际", "百度",
            "网易", "快手", "滴滴出行", "蚂蚁集团", "招商银行", "中国平安", "国家电网", "中国移动", "北京大学", "浙江大学",
            "上海交通大学", "中国科学院", "国家统计局", "证监会", "央视", "广州恒大", "山东泰山队", "上海申花"),
    "LOC": ("New York", "London", "Paris", "Silicon Valley", "San Francisco", "Tokyo", "Seoul", "Singapore",
            "Dubai", "Berlin", "Los Angeles", "Sydney", "Bali", "California", "深圳南山区", "重庆", "厦门", "三亚",
            "大理", "拉萨", "哈尔滨", "长沙", "郑州", "天津", "香港", "澳门", "新加坡",
            "硅谷", "纽约", "伦敦", "迪拜", "首尔", "曼谷", "洛杉矶", "旧金山", "莫斯科", "乌克兰", "以色列",
            "越南", "印度", "珠穆朗玛峰", "黄河", "粤港澳大湾区"),
}
EMOJI = ("😂", "🔥", "👍", "😭", "❤️", "🎉", "🙏", "😅", "🤣", "✨", "💪", "🚀", "👀", "🤔")
TOPICS = ("#热搜#", "#今日话题#", "#打工人#", "#科技前沿#", "#财经#", "#体育#", "#每日一笑#", "#新闻#")


def _is_latin(text: str) -> bool:
    return text[:1].isascii() and text[:1].isalpha()


class _Builder:
    """Text pieces appended one by one, with the spans of the entity pieces."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.length = 0

    def add(self, text: str, label: str | None = None) -> None:
        if label:
            self.spans.append(Span(self.length, self.length + len(text), label))
        self.parts.append(text)
        self.length += len(text)

    def example(self) -> Example:
        return Example("".join(self.parts), tuple(self.spans))


def augment_one(example: Example, rng: random.Random, swap: float = 0.6, social: float = 0.5,
                surfaces: dict[str, Sequence[str]] = SURFACES) -> Example:
    """One augmented copy of ``example`` (see the module docstring)."""
    out = _Builder()
    decorate = rng.random() < social
    cursor = 0
    for span in sorted(example.spans, key=lambda s: s.start):
        out.add(example.text[cursor : span.start])
        surface = example.text[span.start : span.end]
        if span.label in surfaces and rng.random() < swap:
            surface = rng.choice(surfaces[span.label])
        if decorate and span.label == "PER" and rng.random() < 0.3:
            out.add("@")
        latin = _is_latin(surface)
        if latin and out.length and rng.random() < 0.5:
            out.add(" ")
        out.add(surface, span.label)
        if latin and rng.random() < 0.5:
            out.add(" ")
        cursor = span.end
    out.add(example.text[cursor:])
    if decorate:
        if rng.random() < 0.5:
            out.add(rng.choice(EMOJI) * rng.randint(1, 3))
        if rng.random() < 0.3:
            out.add(" " + rng.choice(TOPICS))
    return out.example()


def augment_examples(examples: Sequence[Example], share: float, seed: int) -> list[Example]:
    """Augmented copies of a random ``share`` of the examples that have entities."""
    rng = random.Random(seed)
    with_entities = [e for e in examples if e.spans]
    chosen = rng.sample(with_entities, min(len(with_entities), round(len(examples) * share)))
    return [augment_one(e, rng) for e in chosen]


def mention_swaps(examples: Sequence[Example], share: float, seed: int) -> list[Example]:
    """Copies of a random ``share`` of the examples with most entities replaced by other entities of
    the same type from the examples themselves (mention replacement).

    A test set is full of names the training set never had; a model that remembers training names
    leans on them instead of on the context that makes something a name, and a dev split carved
    from train cannot see it (on MSRA 82 % of dev's entity mentions are training names, 71 % of
    test's). Swapped copies put known context around names it did not come with.
    """
    rng = random.Random(seed)
    pools: dict[str, set[str]] = {}
    for e in examples:
        for s in e.spans:
            pools.setdefault(s.label, set()).add(e.text[s.start:s.end])
    surfaces = {label: sorted(names) for label, names in pools.items()}
    with_entities = [e for e in examples if e.spans]
    chosen = rng.sample(with_entities, min(len(with_entities), round(len(examples) * share)))
    return [augment_one(e, rng, swap=0.8, social=0.0, surfaces=surfaces) for e in chosen]


LIST_OPENINGS = ("委员：", "出席会议的有", "主席团成员：", "名单如下：", "获奖者：", "参加活动的还有", "领导小组成员",
                 "本届理事：", "入选名单：", "嘉宾：", "")
LIST_CLOSINGS = ("。", "等。", "等人出席了会议。", "（以姓氏笔画为序）", "", "等同志。")
LIST_SEPARATORS = ("", "", "、", " ", "，")


def name_lists(examples: Sequence[Example], count: int, seed: int) -> list[Example]:
    """Sentences that list people one after another, as committee and award lists do.

    Official lists often separate names by layout alone, which plain text loses (``李鹏乔石丁关根``),
    and news corpora hold few of them, so a model learns to join neighbouring names into one.
    Names come from the examples' own PER spans, so nothing outside the training data is added.
    """
    rng = random.Random(seed)
    names = sorted({e.text[s.start:s.end] for e in examples for s in e.spans if s.label == "PER" and s.end - s.start > 1})
    if not names:
        return []
    out = []
    for _ in range(count):
        text = _Builder()
        text.add(rng.choice(LIST_OPENINGS))
        separator = rng.choice(LIST_SEPARATORS)
        for i in range(rng.randint(2, 14)):
            if i:
                text.add(separator)
            text.add(rng.choice(names), "PER")
        text.add(rng.choice(LIST_CLOSINGS))
        out.append(text.example())
    return out
