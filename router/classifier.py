"""Classifier router: a trained model (``router.model``) decides which domain a request belongs to, and
its calibrated probability decides whether that domain's SLM may answer.

Checks before classifying, each escalating to the LLM with its reason:

``no_text``              nothing to classify (empty messages, token-id prompts, tool-call-only turns)
``non_text_content X``   an image/audio/file part anywhere: domain SLMs read text only
``tool_turn``            the last message is a tool result or an assistant tool call
``tools_requested``      the request offers tools/functions (domain SLMs are not tool-calling models)
``odd_unicode``          over 30% of the text is invisible, unassigned or combining characters, or it
                         holds unpaired surrogates (not encodable, so not sendable to an SLM as is)
``too_long``             estimated prompt + requested completion tokens exceed the domain SLM's context
``out_of_vocabulary``    under 25% of the latest turn's n-grams were seen in training (another language
                         or script: the probabilities would be guesses)

Then: top label ``general`` -> ``general general=0.91``; a label the policy has no domain for ->
``unserved math=0.88``; below the domain's threshold -> ``low_confidence sql=0.41<0.70``; otherwise
``classified sql=0.93>=0.70`` and the SLM. Any unexpected error -> ``router_error``.

Threshold precedence for a domain: the policy's ``domains[].threshold`` if set, else the threshold
calibrated into the model, else the policy's ``router.threshold``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import Policy
from router.base import Decision, register
from router.features import TfidfFeaturizer, odd_char_ratio
from router.model import GENERAL, ModelError, RouterModel
from router.text import request_shape, routing_parts

ODD_UNICODE_RATIO = 0.3
MIN_KNOWN_RATIO = 0.25
CHARS_PER_TOKEN = 4.0
EXPLAIN_TOP = 5  # features named in Decision.features


class ClassifierRouter:
    def __init__(self, model: RouterModel, policy: Policy) -> None:
        self.model = model
        self._max_chars = policy.router.max_chars
        self._thresholds: dict[str, float] = {}
        self._context: dict[str, int] = {}
        for dom in policy.domains:
            if dom.threshold is not None:
                self._thresholds[dom.name] = dom.threshold
            else:
                self._thresholds[dom.name] = model.thresholds.get(dom.name, policy.router.threshold)
            backend = policy.slm_backends.get(dom.backend)
            if backend is not None:
                self._context[dom.name] = backend.context_length
        self._labels = model.labels
        if isinstance(model.featurizer, TfidfFeaturizer):
            model.featurizer.terms()  # built now, not on the first request

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Effective per-domain thresholds (after policy overrides)."""
        return dict(self._thresholds)

    def decide(self, request: Mapping[str, Any]) -> Decision:
        try:
            return self._decide(request)
        except Exception as exc:
            return Decision("llm", None, 0.0, f"router_error {type(exc).__name__}")

    def _decide(self, request: Mapping[str, Any]) -> Decision:
        if not isinstance(request, Mapping):
            return Decision("llm", None, 0.0, "no_text")
        shape = request_shape(request)
        if shape.non_text:
            return Decision("llm", None, 0.0, "non_text_content " + ",".join(sorted(shape.non_text)))
        if shape.tool_turn:
            return Decision("llm", None, 0.0, "tool_turn")
        if shape.tools_requested:
            return Decision("llm", None, 0.0, "tools_requested")
        parts = routing_parts(request, self._max_chars)
        if not parts:
            return Decision("llm", None, 0.0, "no_text")
        latest = parts[0][0]
        try:
            latest.encode("utf-8")
        except UnicodeEncodeError:
            return Decision("llm", None, 0.0, "odd_unicode unpaired surrogates")
        odd = odd_char_ratio(latest[:2000])
        if odd > ODD_UNICODE_RATIO:
            return Decision("llm", None, 0.0, f"odd_unicode {odd:.0%} invisible/combining")
        if not any(ch.isalnum() for ch in latest):
            return Decision("llm", None, 0.0, "no_text no letters or digits")
        probs, known, pushed = self.model.explain_parts(parts, EXPLAIN_TOP)
        scores = {lab: round(float(p), 4) for lab, p in zip(self._labels, probs, strict=True)}
        why = tuple(pushed)
        i = int(probs.argmax())
        label, conf = self._labels[i], float(probs[i])
        if known < MIN_KNOWN_RATIO:
            return Decision("llm", None, conf, f"out_of_vocabulary known={known:.2f}<{MIN_KNOWN_RATIO:.2f}",
                            scores, why)
        if label == GENERAL:
            return Decision("llm", None, conf, f"general {label}={conf:.2f}", scores, why)
        threshold = self._thresholds.get(label)
        if threshold is None:
            return Decision("llm", label, conf, f"unserved {label}={conf:.2f} (no such domain in the policy)",
                            scores, why)
        if conf < threshold:
            return Decision("llm", label, conf, f"low_confidence {label}={conf:.2f}<{threshold:.2f}", scores, why)
        context = self._context.get(label)
        if context is not None:
            est = int(shape.total_chars / CHARS_PER_TOKEN) + shape.max_tokens
            if est > context:
                return Decision("llm", label, conf, f"too_long ~{est} tokens>{context} context", scores, why)
        return Decision("slm", label, conf, f"classified {label}={conf:.2f}>={threshold:.2f}", scores, why)


def load_for_policy(policy: Policy) -> RouterModel:
    """Load ``policy.router.model_path`` and check it can serve the policy's domains."""
    if not policy.router.model_path:
        raise ValueError("router.kind 'classifier' needs router.model_path")
    path = policy.resolve_path(policy.router.model_path)
    model = RouterModel.load(path)
    if GENERAL not in model.labels:
        raise ModelError(path, f"has no {GENERAL!r} label (labels: {', '.join(model.labels)}); a classifier "
                               "router needs one to recognise out-of-scope requests")
    missing = [d.name for d in policy.domains if d.name not in model.labels]
    if missing:
        raise ModelError(path, f"policy domains {missing} are not labels of this model "
                               f"(labels: {', '.join(model.labels)})")
    return model


@register("classifier")
def _factory(policy: Policy) -> ClassifierRouter:
    return ClassifierRouter(load_for_policy(policy), policy)
