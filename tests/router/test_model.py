"""Training, the artifact round trip, and refusal of damaged or incompatible artifacts."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.router.sources import CODE_FILE
from router.base import build_router
from router.data import read_examples
from router.examples import CHAT_FILE, DEMO_MODEL, GENERAL_FILE, TRAIN_FILE
from router.model import ModelError, RouterModel, data_sha256, fit_temperature, train
from tests.router.conftest import make_policy


def test_trained_model_separates_the_example_domains(trained: tuple[RouterModel, Path]) -> None:
    model, _ = trained
    assert model.labels == ["code", "general", "math", "sql", "support"]
    probs = model.predict_proba(["Write a SQL query that counts orders per customer.",
                                 "My card was declined, why?", "Give me a recipe for pancakes."])
    assert [model.labels[i] for i in probs.argmax(axis=1)] == ["sql", "support", "general"]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_round_trip_keeps_scores_manifest_and_thresholds(trained: tuple[RouterModel, Path], tmp_path: Path) -> None:
    model, _ = trained
    model.update_thresholds({"sql": 0.7, "code": 0.65})
    path = model.save(tmp_path / "m.npz")
    loaded = RouterModel.load(path)
    texts = ["select the top 5 stores by revenue", "how do i reverse a list in python", "hello"]
    assert np.allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    assert loaded.thresholds == {"sql": 0.7, "code": 0.65}
    m = loaded.manifest
    assert m["format_version"] == 1 and m["featurizer"]["name"] == "tfidf"
    assert m["labels"] == model.labels and "scikit-learn" in m["libraries"]
    texts_all, labels_all = read_examples([TRAIN_FILE])
    assert m["training"]["data_sha256"] == data_sha256(texts_all, labels_all)


def test_single_request_path_equals_batch_path(trained: tuple[RouterModel, Path]) -> None:
    model, _ = trained
    for text in ["Solve for x: 3x + 4 = 10.", "why was I charged a fee", "ünïcödé text ☃", "x"]:
        single, _ = model.predict_parts([(text, 1.0)])
        assert np.allclose(single, model.predict_proba([text])[0], atol=1e-5)


def test_temperature_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3
    p = np.exp(logits / 2.0)
    p /= p.sum(axis=1, keepdims=True)
    y = np.asarray([rng.choice(3, p=row) for row in p])
    assert fit_temperature(logits, y) == pytest.approx(2.0, rel=0.15)


def test_training_rejects_a_single_label() -> None:
    with pytest.raises(ValueError, match="at least two labels"):
        train(["a b c", "d e f"], ["x", "x"])


def _rewrite(path: Path, edit_manifest: dict | None = None, edit_arrays: dict | None = None) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    manifest = json.loads(arrays.pop("manifest").tobytes())
    manifest.update(edit_manifest or {})
    arrays.update(edit_arrays or {})
    buf = io.BytesIO()
    np.savez(buf, manifest=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8), **arrays)
    path.write_bytes(buf.getvalue())


def test_missing_file_is_refused_with_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.npz: file not found"):
        RouterModel.load(tmp_path / "nope.npz")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_file_is_refused(model_path: Path, damage: str) -> None:
    data = model_path.read_bytes()
    if damage == "truncate":
        model_path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        model_path.write_bytes(b"not a zip at all" * 100)
    else:  # flip one byte inside the compressed coefficients: zip CRC or our checksum must notice
        with zipfile.ZipFile(model_path) as zf:
            info = zf.getinfo("coef.npy")
        pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
        model_path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    with pytest.raises(ModelError, match=r"model\.npz: corrupt"):
        RouterModel.load(model_path)


def test_changed_arrays_fail_the_checksum(model_path: Path) -> None:
    with np.load(model_path) as npz:
        coef = npz["coef"].copy()
    coef[0, 0] += 1.0
    _rewrite(model_path, edit_arrays={"coef": coef})
    with pytest.raises(ModelError, match="checksum mismatch"):
        RouterModel.load(model_path)


@pytest.mark.parametrize(("edit", "message"), [
    ({"format_version": 2}, "format version 2"),
    ({"format": "something-else"}, "does not describe a slmgw router"),
    ({"featurizer": {"name": "tfidf", "version": 99, "params": {}}}, "featurizer tfidf version 99"),
    ({"featurizer": {"name": "bert", "version": 1, "params": {}}}, "unknown featurizer 'bert'"),
    ({"libraries": {"numpy": "1.26.4"}}, "numpy 1.26.4"),
    ({"thresholds": {"sql": 1.5}}, "bad threshold sql=1.5"),
])
def test_incompatible_manifest_is_refused(model_path: Path, edit: dict, message: str) -> None:
    if edit.get("libraries", {}).get("numpy", "").split(".")[0] == np.__version__.split(".")[0]:
        pytest.skip("running numpy has the same major version as the fake one")
    _rewrite(model_path, edit_manifest=edit)
    with pytest.raises(ModelError, match=message):
        RouterModel.load(model_path)


def test_pickled_payload_is_not_loaded(model_path: Path) -> None:
    with np.load(model_path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef"] = np.asarray([object()], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    model_path.write_bytes(buf.getvalue())
    with pytest.raises(ModelError, match="corrupt or not a router model"):
        RouterModel.load(model_path)


def test_build_router_refuses_policy_domains_the_model_lacks(model_path: Path) -> None:
    policy = make_policy(model_path, {"sql": None, "legal": None})
    with pytest.raises(ValueError, match=r"model\.npz: policy domains \['legal'\] are not labels"):
        build_router(policy)


def test_build_router_refuses_a_model_without_general(tmp_path: Path) -> None:
    path = train(["select a from b", "join two tables", "reverse a list", "python loop"] * 3,
                 ["sql", "sql", "code", "code"] * 3).save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="no 'general' label"):
        build_router(make_policy(path, {"sql": None}))


def test_build_router_reports_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.npz: file not found"):
        build_router(make_policy(tmp_path / "missing.npz"))


def test_committed_demo_model_loads_and_matches_the_examples() -> None:
    from router.starter import project_examples

    model = RouterModel.load(DEMO_MODEL)
    project = project_examples()
    assert {e.source for e in project} == {"project:" + p.name for p in (TRAIN_FILE, CHAT_FILE, GENERAL_FILE,
                                                                         CODE_FILE)}
    assert model.manifest["training"]["project_sha256"] == data_sha256([e.text for e in project],
                                                                       [e.label for e in project]), \
        "router/examples changed: rebuild with `python -m router.examples.build`"
    router = build_router(make_policy(DEMO_MODEL))
    assert router.decide({"messages": [{"role": "user", "content": "Write a SQL query listing all customers."}]}
                         ).domain == "sql"


def test_unknown_featurizer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown featurizer 'bert'"):
        train(["a", "b"], ["x", "y"], featurizer="bert")


def test_fast_ngram_lookup_matches_the_training_analyzer(trained: tuple[RouterModel, Path]) -> None:
    """A decision looks n-grams up without building ``analyze``'s prefixed strings: same columns, same
    distinct count, for short, long (over ``char_cap``), odd-Unicode and repeated texts."""
    featurizer = trained[0].featurizer
    vocab = featurizer.vocab  # type: ignore[attr-defined]
    texts = ["", "x", "ab", "select count(*) from orders group by day", "ünïcödé ☃ text", "no no no no",
             "word " * 400 + "tail", "SELECT  *\n\tFROM t"]
    for text in texts:
        grams = featurizer.analyze(text)  # type: ignore[attr-defined]
        ids, distinct = featurizer._ids(text)  # type: ignore[attr-defined]
        assert sorted(ids.tolist()) == sorted(vocab.get(g, -1) for g in grams), text
        assert distinct == len(set(grams)), text


def test_decision_path_equals_scikit_learn_on_training_texts(trained: tuple[RouterModel, Path]) -> None:
    from router.features import TfidfFeaturizer

    texts, _ = read_examples([TRAIN_FILE])
    featurizer = TfidfFeaturizer(char_min=2, char_max=5)
    fitted = featurizer.fit_transform(texts[:120]).toarray()
    ours = featurizer.transform(texts[:120]).toarray()
    assert np.allclose(fitted, ours, atol=1e-5)
