"""The difficulty model: training, the fast inference path, the artifact, the gate and the metrics."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from router.base import Decision
from router.difficulty import DifficultyError, DifficultyModel, HardGate, request_text
from router.difficulty_metrics import curve, random_scores, summarize
from router.difficulty_train import Record, fit, read_records, sklearn_proba, strip_options, train

_TOPICS_HARD = ["integral", "eigenvalue", "tensor", "manifold", "homomorphism", "entropy", "lagrangian"]
_TOPICS_EASY = ["capital", "colour", "animal", "holiday", "breakfast", "river", "song"]


def synthetic(n: int, seed: int) -> list[Record]:
    """Questions about 'hard' topics are the ones the SLM gets wrong (80%), 'easy' ones rarely (10%)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hard = i % 2 == 0
        topic = rng.choice(_TOPICS_HARD if hard else _TOPICS_EASY)
        filler = rng.choice(["please explain", "what is the", "tell me about", "quick question on"])
        text = f"{filler} {topic} number {rng.randint(1, 50)}?"
        slm_wrong = rng.random() < (0.8 if hard else 0.1)
        out.append(Record(text, 0.0 if slm_wrong else 1.0, 1.0))
    return out


@pytest.fixture(scope="module")
def model() -> DifficultyModel:
    return train(synthetic(400, 1))


def test_strip_options_removes_the_layout_and_keeps_the_question() -> None:
    prompt = ("Let k be the number of real solutions of e^x + x - 2 = 0 in [0, 1]. Which is true?\n"
              "A. k = 0 and n = 1\nB. k = 1 and n = 0\nC. k = n = 1\nD. k > 1\nAnswer:")
    assert strip_options(prompt) == "Let k be the number of real solutions of e^x + x - 2 = 0 in [0, 1]. Which is true?"
    multi = "Passage line one.\nQuestion about it?\nA. one\ntwo\nB. three\nC. four\nD. five\nAnswer:"
    assert strip_options(multi) == "Passage line one.\nQuestion about it?"


def test_model_learns_which_requests_are_hard(model: DifficultyModel) -> None:
    held_out = synthetic(200, 2)
    hard = [model.score(r.text) for i, r in enumerate(held_out) if i % 2 == 0]
    easy = [model.score(r.text) for i, r in enumerate(held_out) if i % 2 == 1]
    assert sum(hard) / len(hard) > sum(easy) / len(easy) + 0.3
    assert sorted(hard)[10] > sorted(easy)[-10]  # all but the tails separate
    result = summarize([model.score(r.text) for r in held_out], [r.slm_score for r in held_out],
                       [r.llm_score for r in held_out])
    assert result.apgr > 0.65  # random routing is ~0.5 on the same data
    assert all(0.0 <= p <= 1.0 for p in hard + easy)


def test_fast_path_matches_scikit_learn() -> None:
    records = synthetic(300, 3)
    vec, clf, mean, scale = fit(records)
    model = train(records)
    texts = [r.text for r in synthetic(50, 4)] + ["", "a" * 5000, "ünïcödé ∫ x² dx = ?", "new\nlines\n\n?"]
    ours = np.array([model.score(t) for t in texts])
    assert np.allclose(ours, sklearn_proba(vec, clf, mean, scale, texts), atol=1e-9)


def test_artifact_round_trip_and_refusals(model: DifficultyModel, tmp_path: Path) -> None:
    path = model.save(tmp_path / "d.npz")
    loaded = DifficultyModel.load(path)
    for text in ("what is the integral of x?", "name a river"):
        assert loaded.score(text) == model.score(text)
    assert loaded.manifest["training"]["records"] == 400
    with pytest.raises(DifficultyError, match="no such file"):
        DifficultyModel.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DifficultyError, match="not a readable"):
        DifficultyModel.load(tmp_path / "junk.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["coef"] = arrays["coef"] * 2
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(DifficultyError, match="checksum"):
        DifficultyModel.load(tmp_path / "tampered.npz")
    other = replace(model, manifest={**model.manifest})
    other.save(tmp_path / "other.npz")
    arrays = dict(np.load(tmp_path / "other.npz", allow_pickle=False))
    manifest = json.loads(arrays["manifest"].tobytes())
    arrays["manifest"] = np.frombuffer(json.dumps({**manifest, "max_chars": 2000}).encode(), dtype=np.uint8)
    np.savez(tmp_path / "other.npz", **arrays)
    with pytest.raises(DifficultyError, match="another featurizer"):
        DifficultyModel.load(tmp_path / "other.npz")


def _chat(text: str) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "earlier"},
                                          {"role": "assistant", "content": "ok"},
                                          {"role": "user", "content": [{"type": "text", "text": text}]}]}


def test_request_text_reads_the_latest_user_turn() -> None:
    assert request_text(_chat("the tensor question")) == "the tensor question"
    assert request_text({"prompt": "complete this"}) == "complete this"
    assert request_text({"prompt": [1, 2, 3]}) == ""
    assert request_text({"messages": "nonsense"}) == ""


def test_gate_escalates_hard_requests_with_a_reason(model: DifficultyModel) -> None:
    gate = HardGate(model, {"math": 0.5})
    decision = Decision("slm", "math", 0.93, "classified math=0.93>=0.70")
    hard = gate.apply(decision, _chat("please explain eigenvalue number 7?"))
    p = model.score("please explain eigenvalue number 7?")
    assert p >= 0.5
    assert hard.target == "llm" and hard.domain == "math"
    assert hard.reason == f"hard math p={p:.2f}>=0.50; classified math=0.93>=0.70"
    easy = gate.apply(decision, _chat("tell me about breakfast number 3?"))
    assert easy is decision
    other = Decision("slm", "sql", 0.9, "classified sql=0.90>=0.70")  # no hard_threshold for sql
    assert gate.apply(other, _chat("please explain eigenvalue number 7?")) is other
    llm = Decision("llm", "math", 0.4, "low_confidence math=0.40<0.70")
    assert gate.apply(llm, _chat("please explain eigenvalue number 7?")) is llm


def test_metrics_on_a_hand_worked_example() -> None:
    weak, strong = [1, 0, 1, 0], [1, 1, 1, 1]
    # Edges at the 0/50/100th percentiles: all to the LLM, the top half, none.
    good = summarize([0.1, 0.4, 0.2, 0.3], weak, strong, num_results=2)
    assert [(p.strong_pct, p.quality) for p in good.points] == [(0.0, 50.0), (50.0, 100.0), (100.0, 100.0)]
    assert good.apgr == pytest.approx(0.75)  # AUC 87.5 between weak 50 and strong 100
    assert good.cpt50 == pytest.approx(25.0)
    bad = summarize([0.1, 0.2, 0.3, 0.4], weak, strong, num_results=2)
    assert bad.apgr == pytest.approx(0.5)
    assert bad.cpt50 == pytest.approx(50.0)


def test_curve_uses_ge_except_at_the_top_edge() -> None:
    pts = curve([0.5, 0.5, 0.5], [0, 0, 0], [1, 1, 1], num_results=2)
    assert [p.strong_pct for p in pts] == [100.0, 100.0, 0.0]


def test_random_routing_scores_about_half() -> None:
    rng = random.Random(5)
    weak = [float(rng.random() < 0.6) for _ in range(5000)]
    strong = [float(rng.random() < 0.85) for _ in range(5000)]
    apgrs = [summarize(random_scores(5000, s), weak, strong).apgr for s in range(5)]
    assert 0.45 < float(np.mean(apgrs)) < 0.55


def test_read_records_validates(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "q", "slm_score": True, "llm_score": 0.5, "subject": "x"}) + "\n\n")
    [rec] = read_records([good])
    assert (rec.slm_score, rec.llm_score, rec.extra) == (1.0, 0.5, {"subject": "x"})
    assert not rec.worse
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "q", "slm_score": 2, "llm_score": 1}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: score must be"):
        read_records([bad])
    with pytest.raises(ValueError, match="where the SLM is worse"):
        train([Record("a", 1, 1), Record("b", 1, 1)])
