"""Accuracy and speed of each engine on a tagged corpus, and the choice of the default engine:
the one that answers a single task fastest among those whose F1 is within ``MAX_F1_LOSS`` of
PyTorch fp32. Which engine is fastest depends on the CPU (INT8 gains much where it has VNNI, nothing
on some AVX2 machines), so the choice is timed again on the machine that serves (``fastest_here``)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

from ..model.data import Example
from ..model.metrics import bootstrap_f1, entity_scores
from .loader import BaseRuntime, build_predictor

MAX_F1_LOSS = 0.003  # 0.3 F1 points
LATENCY_SENTENCES = 200  # predicted one at a time for the single-task latency
# Tasks of the lengths annotators open (news and modern text, 8-80 characters, half of them over 30), to
# time engines on.
TIMING_TEXTS = (
    "国务院总理李鹏今天在北京会见了日本客人。",
    "华为在深圳发布了Mate60手机，余承东称销量超出预期。",
    "梅西随阿根廷队在卡塔尔赢得世界杯🏆",
    "@雷军 小米SU7在北京亦庄工厂下线 #小米汽车#",
    "OpenAI的Sam Altman访问了东京。",
    "台積電董事長魏哲家表示，高雄廠將如期量產。",
    "中国人民银行上海总部决定，自下月起下调存款准备金率。",
    "据新华社报道，联合国秘书长古特雷斯昨天抵达内罗毕，与肯尼亚总统鲁托举行会谈，双方就地区安全和气候变化等议题交换了意见。",
    "明天去杭州西湖。",
    "贵州茅台一季度净利润同比增长，白酒板块集体上涨。",
    "谷爱凌在张家口云顶滑雪公园夺得金牌。",
    "上海交通大学医学院附属瑞金医院的专家团队在《自然》杂志上发表了关于肝癌免疫治疗的最新研究成果，引起国际同行关注。",
    "记者从广东省交通运输厅获悉，深中通道开通以来日均车流量超过十万车次，珠江两岸的往来更加便捷。",
    "欧洲央行行长拉加德在法兰克福表示，将继续密切关注通胀走势，必要时调整利率。",
    "#巴黎奥运会# 潘展乐在男子100米自由泳决赛中打破世界纪录，为中国游泳队再添一金🥇",
    "腾讯和网易都在杭州设立了研发中心，阿里巴巴的总部也在那里，很多年轻人因此来到浙江工作。",
    "苹果公司CEO库克在上海与大学生交流时说，中国的开发者社区非常有活力，他每次来都很受启发。",
    "據香港天文台預測，颱風將於週末在廣東沿岸登陸，市民應提前做好防風準備。",
)


def evaluate_engines(runtime: BaseRuntime, folder: Path, version: str, engines: Sequence[str],
                     examples: Sequence[Example], threads: int = 0) -> dict:
    texts = [e.text for e in examples]
    results = {}
    for engine in engines:
        predictor = build_predictor(runtime, folder, version, engine, cache_size=0, threads=threads)
        predictor.predict(texts[:64])  # warm-up: first-run allocations are not the engine's speed
        started = time.perf_counter()
        predicted = predictor.predict(texts)
        seconds = time.perf_counter() - started
        spans = [[(e.start, e.end, e.label) for e in r.entities] for r in predicted]
        gold = [e.spans for e in examples]
        results[engine] = {"scores": entity_scores(gold, spans), "f1_ci95": bootstrap_f1(gold, spans),
                           "seconds": round(seconds, 2), "sentences_per_s": round(len(texts) / seconds, 1),
                           "one_task_p50_ms": one_task_p50_ms(predictor, texts[:LATENCY_SENTENCES])}
    return results


def one_task_p50_ms(predictor, texts: Sequence[str]) -> float:
    """Median time to label one text alone, as an annotator opening a task waits for it."""
    return round(1000 * statistics.median(one_task_seconds(predictor, texts)), 1)


def one_task_seconds(predictor, texts: Sequence[str]) -> list[float]:
    """The time to label each text alone."""
    times = []
    for text in texts:
        started = time.perf_counter()
        predictor.predict([text])
        times.append(time.perf_counter() - started)
    return times


def eligible_engines(evaluation: dict) -> list[str]:
    """The engines of a recorded evaluation (``raner-backend evaluate --record``: F1 per engine)
    whose F1 is within ``MAX_F1_LOSS`` of torch fp32's."""
    f1 = evaluation.get("f1", {})
    if "torch" not in f1:
        return []
    return [name for name, value in f1.items() if f1["torch"] - value <= MAX_F1_LOSS]


def fastest_here(predictors: dict, rounds: int = 3) -> dict:
    """The engine (of ``predictors``, name → Predictor with its cache off) that answers one task
    fastest on this machine, by the median over ``rounds`` of every timing text one at a time. The
    engines take turns a round each, so that a busy moment of a shared machine costs them alike; not
    a task each, because PyTorch's OpenMP threads spin on after a call and slowed the engine that
    followed it (ORT fp32 14-15 ms after PyTorch, 12.6-12.9 without it)."""
    for predictor in predictors.values():
        predictor.predict(list(TIMING_TEXTS[:4]))  # first-run allocations are not the engine's speed
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(rounds):
        for name, predictor in predictors.items():
            times[name] += one_task_seconds(predictor, TIMING_TEXTS)
    p50 = {name: round(1000 * statistics.median(t), 2) for name, t in times.items()}
    best = min(p50, key=p50.get)
    return {"engine": best, "rule": f"lowest one-task latency on this machine among engines with F1 within "
                                    f"{MAX_F1_LOSS * 100:.1f} points of torch fp32",
            "one_task_p50_ms": p50, "tasks": len(TIMING_TEXTS) * rounds,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def choose_engine(results: dict) -> dict:
    """Among the engines within ``MAX_F1_LOSS`` of torch fp32, the one with the lowest single-task
    latency: Label Studio asks for one task each time an annotator opens one, while batched
    throughput (ranking a project) differed little between the engines (README, Engine benchmark)."""
    reference = results["torch"]["scores"]["overall"]["f1"]
    eligible = [name for name, r in results.items() if reference - r["scores"]["overall"]["f1"] <= MAX_F1_LOSS]
    best = min(eligible, key=lambda name: results[name]["one_task_p50_ms"])
    return {"engine": best, "rule": f"lowest one-task latency among engines with F1 within "
                                    f"{MAX_F1_LOSS * 100:.1f} points of torch fp32",
            "torch_f1": reference, "f1": results[best]["scores"]["overall"]["f1"],
            "sentences_per_s": results[best]["sentences_per_s"], "one_task_p50_ms": results[best]["one_task_p50_ms"]}
