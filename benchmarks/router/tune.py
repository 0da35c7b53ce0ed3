"""Recipe search for the tfidf router on a validation protocol that never reads eval.jsonl.

    .venv/bin/python -m benchmarks.router.tune [--configs base,c3,...] [--folds 5] [--json OUT]

Protocol: the public pool is split as in the benchmark (70% train / 10% validation / 20% held back;
the held-back part is not used here). ``train_chat.jsonl`` (written before eval.jsonl was looked at) is
cut into ``--folds`` label-stratified folds. For fold k a model is trained on the public train split +
``train.jsonl`` + the other folds of train_chat (chat weight as configured) and scores fold k and the
public validation split. Reported per config, over the 762 out-of-fold chat prompts:

* ``acc``: argmax accuracy;
* ``cov``/``leak`` (cross-fitted): fold k's thresholds are calibrated (2% leakage budget) on the
  public validation split + the out-of-fold chat prompts of the *other* folds, then applied to fold k;
  this is how the benchmark calibrates (validation + held-out chat), measured on prompts neither the
  model nor the thresholds saw;
* ``cov@2%``: the best coverage any per-domain thresholds reach on the OOF chat prompts with leakage
  <= 2% (separability; thresholds fitted on the same prompts, so optimistic but fair between configs).

``train_general.jsonl`` and ``train_code.jsonl`` get their own folds and are always scored; configs
with ``general``/``code`` also train and calibrate on them (``gen_leak``, ``train_code``, ``all`` columns).

eval.jsonl is never read here. The chosen recipe is evaluated once with the benchmark itself
(``python -m benchmarks.router --char-ngrams 2-5``). ``--dump DIR`` saves the probabilities (all three
files' prompts and which ones the config calibrates on) and ``--rules DIR`` compares the threshold rules
of ``router.calibrate`` on them (cross-fitted the way the benchmark calibrates).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.router.sources import CODE_FILE, Example, build, read_labelled, split  # noqa: E402
from router.calibrate import RULES, calibrate  # noqa: E402
from router.examples import CHAT_FILE, GENERAL_FILE, TRAIN_FILE  # noqa: E402
from router.features import _WORD, normalize  # noqa: E402
from router.metrics import rates, route  # noqa: E402
from router.model import GENERAL, fit_temperature  # noqa: E402

MAX_LEAKAGE = 0.02


@dataclass(frozen=True)
class Config:
    name: str
    c: float = 10.0
    chat_weight: float = 10.0
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    char_wb: bool = False
    min_df: int = 2
    max_features: int = 150_000
    sublinear: bool = True
    balanced: bool = True
    temperature: str = "fit>=1"  # "fit>=1" (the current rule), "fit" (also sharpen), "none"
    general: bool = False  # fold train_general.jsonl in with train_chat (training at chat weight + calibration)
    code: bool = False  # the same for train_code.jsonl (code prompts + support/general hard negatives)
    extra: dict[str, Any] = field(default_factory=dict)

    def analyzer_key(self) -> tuple[Any, ...]:
        return (self.word_ngrams, self.char_ngrams, self.char_wb)


def analyze(text: str, cfg: Config, char_cap: int = 1500) -> list[str]:
    """The featurizer's analyzer with the n-gram ranges as parameters (cfg defaults = the shipped one)."""
    text = normalize(text)
    words = _WORD.findall(text)
    lo, hi = cfg.word_ngrams
    grams: list[str] = []
    for n in range(lo, hi + 1):
        if n == 1:
            grams += ["w " + w for w in words]
        elif n == 2:
            grams += ["w " + a + " " + b for a, b in itertools.pairwise(words)]
        else:
            grams += ["w " + " ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    clo, chi = cfg.char_ngrams
    if cfg.char_wb:
        for w in text[:char_cap].split():
            s = " " + w + " "
            for k in range(clo, chi + 1):
                grams += ["c" + s[i:i + k] for i in range(len(s) - k + 1)]
    else:
        s = " " + text[:char_cap] + " "
        for k in range(clo, chi + 1):
            grams += ["c" + s[i:i + k] for i in range(len(s) - k + 1)]
    return grams


CONFIGS: dict[str, Config] = {c.name: c for c in [
    Config("base"),
    Config("C=3", c=3.0),
    Config("C=30", c=30.0),
    Config("C=100", c=100.0),
    Config("chat_w=5", chat_weight=5.0),
    Config("chat_w=20", chat_weight=20.0),
    Config("unbalanced", balanced=False),
    Config("min_df=1", min_df=1),
    Config("min_df=3", min_df=3),
    Config("max_feat=50k", max_features=50_000),
    Config("max_feat=300k", max_features=300_000),
    Config("words 1-1", word_ngrams=(1, 1)),
    Config("words 1-3", word_ngrams=(1, 3)),
    Config("char 2-5", char_ngrams=(2, 5)),
    Config("char 3-6", char_ngrams=(3, 6)),
    Config("char_wb 3-5", char_wb=True),
    Config("char_wb 2-5", char_wb=True, char_ngrams=(2, 5)),
    Config("no sublinear", sublinear=False),
    Config("temp fit", temperature="fit"),
    Config("temp none", temperature="none"),
    Config("+general", general=True),
    Config("+general char 2-5", general=True, char_ngrams=(2, 5)),
    Config("+general C=3", general=True, c=3.0),
    Config("+general+code char 2-5", general=True, code=True, char_ngrams=(2, 5)),
    Config("+general+code char 2-5 chat_w=20", general=True, code=True, char_ngrams=(2, 5), chat_weight=20.0),
    Config("+general+code char 2-5 C=3", general=True, code=True, char_ngrams=(2, 5), c=3.0),
]}


def chat_folds(chat: list[Example], k: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    fold = [0] * len(chat)
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(chat):
        by_label.setdefault(e.label, []).append(i)
    for _, idx in sorted(by_label.items()):
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


class Analyzed:
    """Cache of analyzed texts per analyzer setting (analysis dominates featurizing time)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[Any, ...], dict[str, list[str]]] = {}

    def get(self, cfg: Config) -> dict[str, list[str]]:
        return self.cache.setdefault(cfg.analyzer_key(), {})

    def analyzer(self, cfg: Config) -> Any:
        memo = self.get(cfg)

        def fn(text: str) -> list[str]:
            out = memo.get(text)
            if out is None:
                out = memo[text] = analyze(text, cfg)
            return out

        return fn


def fit_predict(cfg: Config, an: Analyzed, train_ex: list[Example], weights: list[float],
                score_sets: list[list[Example]], temp_set: list[Example] | None,
                labels: list[str]) -> list[np.ndarray]:
    """Train one model and return softmax probabilities for each of ``score_sets``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer=an.analyzer(cfg), min_df=cfg.min_df, max_features=cfg.max_features,
                          sublinear_tf=cfg.sublinear, dtype=np.float32)
    x = vec.fit_transform([e.text for e in train_ex])
    y = np.asarray([labels.index(e.label) for e in train_ex])
    w = np.asarray(weights, dtype=np.float64)
    if cfg.balanced:
        totals = np.bincount(y, weights=w, minlength=len(labels))
        cw = totals.sum() / (len(labels) * np.maximum(totals, 1e-12))
        w = w * cw[y]
    clf = LogisticRegression(C=cfg.c, max_iter=2000).fit(x, y, sample_weight=w)
    t = 1.0
    if temp_set and cfg.temperature != "none":
        vy = np.asarray([labels.index(e.label) for e in temp_set])
        t = fit_temperature(clf.decision_function(vec.transform([e.text for e in temp_set])), vy)
        if cfg.temperature == "fit>=1":
            t = max(1.0, t)
    out = []
    for s in score_sets:
        z = clf.decision_function(vec.transform([e.text for e in s])) / t
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out.append((e / e.sum(axis=1, keepdims=True)).astype(np.float32))
    return out


def run_config(cfg: Config, an: Analyzed, pub_train: list[Example], val: list[Example], gen_train: list[Example],
               chat_only: list[Example], chat_fold: list[int], k: int, labels: list[str],
               dump: Path | None = None, general: list[Example] | None = None,
               code: list[Example] | None = None, rule: str = "lagrange") -> dict[str, Any]:
    """Cross-fitted scores of one config. train_general.jsonl and train_code.jsonl get their own
    stratified folds and are always *scored* (fold f's model scores their fold-f prompts); with
    ``cfg.general`` / ``cfg.code`` they are also folded in exactly like train_chat (trained on at chat
    weight when out of fold, their OOF probabilities part of the other folds' calibration); without,
    no model or threshold sees them. cov/leak/acc stay measured on the train_chat prompts, so rows
    compare; ``gen_leak`` is the leakage on train_general, ``code_*`` the rates on train_code, ``all_*``
    over all three files' prompts."""
    t0 = time.perf_counter()
    gen_ex, code_ex = list(general or []), list(code or [])
    chat = chat_only + gen_ex + code_ex
    fold = chat_fold + chat_folds(gen_ex, k) + chat_folds(code_ex, k)
    n_chat, n_gen = len(chat_only), len(gen_ex)
    used = np.asarray([i < n_chat or (cfg.general if i < n_chat + n_gen else cfg.code) for i in range(len(chat))])
    oof = np.zeros((len(chat), len(labels)), dtype=np.float32)
    val_probs: list[np.ndarray] = []
    for f in range(k):
        keep = [chat[i] for i in range(len(chat)) if fold[i] != f and used[i]]
        held_idx = [i for i in range(len(chat)) if fold[i] == f]
        tr = pub_train + gen_train + keep
        w = [1.0] * len(pub_train) + [cfg.chat_weight] * (len(gen_train) + len(keep))
        # the temperature is fitted on the public validation split, never on the held-out chat fold
        p_held, p_val = fit_predict(cfg, an, tr, w, [[chat[i] for i in held_idx], val], val, labels)
        oof[held_idx] = p_held
        val_probs.append(p_val)
    y = np.asarray([labels.index(e.label) for e in chat])
    # cross-fitted thresholds: calibrate on validation (scored by fold f's model) + other folds' OOF chat
    slm = np.zeros(len(chat), dtype=bool)
    pred = oof.argmax(axis=1)
    thr_all = []
    for f in range(k):
        other = np.asarray([i for i in range(len(chat)) if fold[i] != f and used[i]])
        held = np.asarray([i for i in range(len(chat)) if fold[i] == f])
        probs = np.vstack([val_probs[f], oof[other]])
        true = [e.label for e in val] + [chat[i].label for i in other]
        thr, _ = calibrate(probs, true, labels, MAX_LEAKAGE, rule)
        thr_all.append(thr)
        r = route(oof[held], labels, thr)
        slm[held] = r.slm
    from router.metrics import Routed

    conf = oof[np.arange(len(y)), pred]

    def part(lo: int, hi: int) -> dict[str, float]:
        return rates(Routed(pred=pred[lo:hi], conf=conf[lo:hi], slm=slm[lo:hi]), y[lo:hi], labels)

    gen = labels.index(GENERAL)
    gen_leak = float(slm[n_chat:n_chat + n_gen].mean()) if n_gen else float("nan")
    code_part = part(n_chat + n_gen, len(chat)) if code_ex else {}
    all_part = part(0, len(chat))
    code_lab = labels.index("code")
    code_rec = float((pred[n_chat + n_gen:][y[n_chat + n_gen:] == code_lab] == code_lab).mean()) if code_ex else 0.0
    if dump is not None:
        # every scored prompt (train_chat, then train_general, then train_code), which of them the config
        # trains/calibrates on, and which file each comes from (0/1/2): what ``--rules`` cross-fits on
        dump.mkdir(parents=True, exist_ok=True)
        np.savez(dump / (cfg.name.replace(" ", "_").replace("/", "_") + ".npz"), oof=oof, y=y,
                 fold=np.asarray(fold), used=used,
                 src=np.asarray([0] * n_chat + [1] * n_gen + [2] * len(code_ex)),
                 val=np.stack(val_probs), val_y=np.asarray([labels.index(e.label) for e in val]))
    oof, y, pred, conf, slm = oof[:n_chat], y[:n_chat], pred[:n_chat], conf[:n_chat], slm[:n_chat]
    acc = float((pred == y).mean())
    xfit = rates(Routed(pred=pred, conf=conf, slm=slm), y, labels)
    _, oracle = calibrate(oof, [e.label for e in chat_only], labels, MAX_LEAKAGE, "lagrange")
    recall = {lab: float((pred[y == i] == i).mean()) for i, lab in enumerate(labels)}
    return {"config": cfg.name, "acc": acc, "cov": xfit["coverage"], "leak": xfit["leakage"],
            "mis": xfit["misroute"], "cov@2%": oracle["coverage"], "leak@2%": oracle["leakage"],
            "general_recall": recall[labels[gen]], "gen_leak": gen_leak, "recall": recall,
            "code_cov": code_part.get("coverage", float("nan")), "code_leak": code_part.get("leakage", float("nan")),
            "code_recall": code_rec, "all_cov": all_part["coverage"], "all_leak": all_part["leakage"],
            "seconds": time.perf_counter() - t0,
            "thresholds": thr_all}


def _part(r: Any, y: np.ndarray, mask: np.ndarray, labels: list[str]) -> dict[str, float]:
    from router.metrics import Routed

    return rates(Routed(pred=r.pred[mask], conf=r.conf[mask], slm=r.slm[mask]), y[mask], labels)


def threshold_rules(dump: Path, labels: list[str], rules: Sequence[str] = RULES) -> list[dict[str, Any]]:
    """Cross-fitted coverage/leakage of each threshold rule (``router.calibrate``) on saved out-of-fold
    probabilities: fold f's thresholds come from the public validation split (scored by fold f's model)
    plus the other folds' prompts the config calibrates on (the benchmark's calibration data), and are
    applied to fold f of all three files. Columns: train_chat (as in ``run_config``), leakage on
    train_general, and all three files pooled; ``spread`` is each domain's threshold range over folds."""
    from router.metrics import Routed

    out = []
    for path in sorted(dump.glob("*.npz")):
        d = np.load(path)
        if "used" not in d.files:
            raise SystemExit(f"{path}: dumped before train_general/train_code were saved; re-run with --dump")
        oof, y, fold, val, val_y, used, src = (d[k] for k in ("oof", "y", "fold", "val", "val_y", "used", "src"))
        pred = oof.argmax(axis=1)
        conf = oof[np.arange(len(y)), pred]
        val_true = [labels[i] for i in val_y]
        for rule in rules:
            slm = np.zeros(len(y), dtype=bool)
            thr_folds = []
            for f in range(int(fold.max()) + 1):
                held, other = fold == f, (fold != f) & used
                thr, _ = calibrate(np.vstack([val[f], oof[other]]), val_true + [labels[i] for i in y[other]],
                                   labels, MAX_LEAKAGE, rule)
                thr_folds.append(thr)
                slm[held] = route(oof[held], labels, thr).slm
            routed = Routed(pred=pred, conf=conf, slm=slm)
            chat, all_ = _part(routed, y, src == 0, labels), _part(routed, y, np.ones(len(y), dtype=bool), labels)
            gen_leak = _part(routed, y, src == 1, labels)["leakage"] if (src == 1).any() else float("nan")
            spread = {k: (min(t[k] for t in thr_folds), max(t[k] for t in thr_folds)) for k in thr_folds[0]}
            row = {"dump": path.stem, "rule": rule, "cov": chat["coverage"], "leak": chat["leakage"],
                   "mis": chat["misroute"], "gen_leak": gen_leak, "all_cov": all_["coverage"],
                   "all_leak": all_["leakage"], "all_mis": all_["misroute"], "spread": spread}
            out.append(row)
            print(f"{path.stem:<34} {rule:<10} chat cov {row['cov']:.1%} leak {row['leak']:.1%} mis {row['mis']:.1%}"
                  f" | gen_leak {gen_leak:.1%} | all cov {row['all_cov']:.1%} leak {row['all_leak']:.1%}"
                  f" mis {row['all_mis']:.1%} | "
                  + " ".join(f"{k} {lo:.2f}-{hi:.2f}" for k, (lo, hi) in spread.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated config names")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dump", type=Path, help="save each config's out-of-fold and validation probabilities here")
    ap.add_argument("--rules", type=Path, help="only compare threshold rules on the probabilities in this dump")
    ap.add_argument("--xfit-rule", default="lagrange",
                    help="threshold rule of the cov/leak columns (default lagrange, the rule of the documented "
                         "recipe tables; the benchmark's default is router.calibrate.DEFAULT_RULE)")
    ap.add_argument("--rule-names", default=",".join(RULES), help="rules for --rules (router.calibrate.RULES)")
    args = ap.parse_args(argv)
    if args.rules:
        rows = threshold_rules(args.rules, ["code", "general", "math", "sql", "support"],
                               [r for r in args.rule_names.split(",") if r])
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    pool = build(recipe="chat")
    pub_train, val, _held_back = split(pool, (0.7, 0.1, 0.2))
    gen_train = read_labelled(TRAIN_FILE)
    chat = read_labelled(CHAT_FILE)
    general = read_labelled(GENERAL_FILE)
    code = read_labelled(CODE_FILE)
    fold = chat_folds(chat, args.folds)
    labels = sorted({e.label for e in pool})
    an = Analyzed()
    results = []
    for name in [n for n in args.configs.split(",") if n]:
        cfg = CONFIGS[name]
        r = run_config(cfg, an, pub_train, val, gen_train, chat, fold, args.folds, labels, args.dump, general, code,
                       args.xfit_rule)
        results.append(r)
        print(f"{r['config']:<16} acc {r['acc']:.1%}  xfit cov {r['cov']:.1%} leak {r['leak']:.1%} mis {r['mis']:.1%}"
              f"  cov@2% {r['cov@2%']:.1%} (leak {r['leak@2%']:.1%})  gen_leak {r['gen_leak']:.1%}  "
              f"train_code: cov {r['code_cov']:.1%} leak {r['code_leak']:.1%} code recall {r['code_recall']:.0%}  "
              f"all: cov {r['all_cov']:.1%} leak {r['all_leak']:.1%}  "
              + " ".join(f"{k[:3]} {v:.0%}" for k, v in r["recall"].items()) + f"  [{r['seconds']:.0f} s]",
              flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
