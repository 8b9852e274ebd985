"""Text features in the Evidently-format report: what tells the two windows apart, in words and documents.

Evidently's own text drift widget (part of its ``DataDriftPreset``) shows characteristic
words only for a drifted column. The report adds, for every text feature in both samples,
driftwarden's explanation as ``driftwarden drift --format json`` and the report page give
it: the domain classifier of :mod:`driftwarden.detectors.methods.domain_classifier`
(Evidently's text drift: TF-IDF into an L1 ``SGDClassifier``, ROC AUC on a held-out half,
drift above 0.55 or, for references of at most 1000 documents, above the 95th percentile
of random scorers) trained on the report's samples in the order Evidently receives them,
so its score and verdict are those of Evidently's widget; then the words with the largest
weights towards each window and the held-out documents the classifier is surest about.

The documents are the stored text: redacted by the collector before it was stored (its
redaction patterns and redacted field names), cut to
:data:`~driftwarden.detectors.methods.domain_classifier.EXAMPLE_CHARS` characters, and
escaped in the HTML.
"""

from __future__ import annotations

import html
from typing import Any

MIN_DOCUMENTS = 10  # fewer documents in either sample than this: no classifier (as the drift detector)


def documents(rows: list[dict[str, Any]], name: str) -> list[str]:
    """The values of text feature ``name`` in the sampled rows, in the sample's order."""
    out = []
    for row in rows:
        for feature, value in zip(row.get("text_names") or [], row.get("text_values") or [], strict=False):
            if feature == name:
                out.append(value)
    return out


def text_features(ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]) -> list[str]:
    """Names of the text features present in both samples, sorted."""
    ref = {name for row in ref_rows for name in row.get("text_names") or []}
    cur = {name for row in cur_rows for name in row.get("text_names") or []}
    return sorted(ref & cur)


def explain(ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per text feature: the domain classifier's verdict, characteristic words and typical documents of each
    window (``{"verdict": "no verdict", "note": ...}`` when a window has too few documents or no words)."""
    from driftwarden.detectors.methods.domain_classifier import DomainClassifier
    from driftwarden.detectors.methods.samples import TextSample

    out: dict[str, dict[str, Any]] = {}
    for name in text_features(ref_rows, cur_rows):
        reference, current = documents(ref_rows, name), documents(cur_rows, name)
        entry: dict[str, Any] = {"reference_documents": len(reference), "current_documents": len(current)}
        if len(reference) < MIN_DOCUMENTS or len(current) < MIN_DOCUMENTS:
            entry.update(
                verdict="no verdict",
                note=f"{len(reference)} reference and {len(current)} current documents in the samples, "
                f"below the minimum of {MIN_DOCUMENTS} per window",
            )
            out[name] = entry
            continue
        try:
            score = DomainClassifier().score(TextSample(reference, current, len(reference), len(current)))
        except ValueError as exc:  # scikit-learn: no word in any document
            reason = "the documents hold no words the classifier can use" if "vocabulary" in str(exc) else str(exc)
            entry.update(verdict="no verdict", note=reason)
            out[name] = entry
            continue
        entry.update(
            method=score.method,
            statistic=score.statistic,
            threshold=score.threshold,
            drifted=score.drifted,
            verdict="drift" if score.drifted else "no drift",
            typical_words=score.details["typical_words"],
            typical_examples=score.details["typical_examples"],
        )
        if "bootstrap" in score.details:
            entry["bootstrap"] = score.details["bootstrap"]
        out[name] = entry
    return out


def section_html(explanations: dict[str, dict[str, Any]]) -> str:
    """An escaped HTML section: per text feature, its verdict, then words and documents side by side."""
    if not explanations:
        return ""
    e = html.escape
    parts = ['<section class="dw-provenance dw-text" id="text-features"><h2>Text features</h2>']
    parts.append(
        "<p>What tells the windows apart: a domain classifier (Evidently's text drift method) trained to tell "
        "reference documents from current ones on the samples of this report; the words weighing most towards "
        "each window and the held-out documents it is surest about (stored text, redacted by the collector).</p>"
    )
    for name, entry in explanations.items():
        counts = f"{entry['reference_documents']} reference and {entry['current_documents']} current documents"
        if entry["verdict"] == "no verdict":
            parts.append(f"<h3>{e(name)}</h3><p>no verdict: {e(entry['note'])} ({e(counts)})</p>")
            continue
        rule = "random-classifier percentile" if "bootstrap" in entry else "fixed threshold"
        parts.append(
            f'<h3>{e(name)}</h3><p class="dw-verdict">domain classifier ROC AUC {entry["statistic"]:.3f}, threshold '
            f"{entry['threshold']:.3f} ({e(rule)}): <strong>{e(entry['verdict'])}</strong>, on {e(counts)}</p>"
        )
        words, examples = entry["typical_words"], entry["typical_examples"]
        parts.append(
            '<table class="dw-words"><tr><th>characteristic words of the reference</th>'
            "<th>characteristic words of the current window</th></tr>"
            f"<tr><td>{e(', '.join(words['reference'])) or '-'}</td>"
            f"<td>{e(', '.join(words['current'])) or '-'}</td></tr></table>"
        )
        parts.append(
            '<table class="dw-examples"><tr><th>typical documents of the reference</th>'
            "<th>typical documents of the current window</th></tr>"
            f"<tr><td>{_items(examples['reference'])}</td><td>{_items(examples['current'])}</td></tr></table>"
        )
    parts.append("</section>")
    return "".join(parts)


def _items(texts: list[str]) -> str:
    if not texts:
        return "-"
    return "<ol>" + "".join(f"<li>{html.escape(t)}</li>" for t in texts) + "</ol>"
