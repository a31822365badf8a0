"""Recall: match a new problem against the ledger, best first, with a confidence.

Score = structural signature similarity, raised towards 1 by text similarity (TF-IDF over what
the entries say, notes included, so a person's words help recall; text never lowers a match,
since two descriptions of the same symptom differ in their numbers). A match above `AUTO_APPLY`
lets the loop apply the known fix at once instead of diagnosing from scratch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from linelab.knowhow.ledger import Entry, all_entries
from linelab.knowhow.signature import Signature, signature_of, similarity

TEXT_WEIGHT = 0.25
AUTO_APPLY = 0.8  # confidence above which a policy may apply the recalled fix directly


class Match(BaseModel):
    entry_id: str
    title: str
    score: float
    structural: float
    text: float
    fix: str
    why: str


def _text_scores(query: str, entries: list[Entry]) -> list[float]:
    # scikit-learn costs a second to import: only a search or a recall pays for it
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    docs = [e.text() for e in entries]
    try:
        tfidf = TfidfVectorizer(token_pattern=r"[A-Za-z0-9]+").fit(docs + [query])
    except ValueError:  # nothing but stop words anywhere
        return [0.0] * len(entries)
    return cosine_similarity(tfidf.transform([query]), tfidf.transform(docs))[0].tolist()


def rank(query_sig: Signature, query_text: str, entries: list[Entry], top: int = 5) -> list[Match]:
    if not entries:
        return []
    texts = _text_scores(query_text, entries)
    matches = []
    for entry, text in zip(entries, texts, strict=True):
        structural = similarity(query_sig, entry.signature)
        score = structural + TEXT_WEIGHT * text * (1 - structural)
        same = [k for k in ("kind", "station", "measurement", "defect_code", "direction")
                if getattr(query_sig, k) is not None and getattr(query_sig, k) == getattr(entry.signature, k)]
        matches.append(Match(entry_id=entry.id, title=entry.title, score=round(score, 4),
                             structural=round(structural, 4), text=round(text, 4), fix=entry.fix.action,
                             why="same " + ", ".join(same) if same else "text only"))
    matches.sort(key=lambda m: -m.score)
    return matches[:top]


def recall(ws: Any, problem: dict[str, Any], top: int = 5) -> list[Match]:
    """The ledger entries most like `problem`, best first.

    A problem raised by an entry's watch is that entry's failure mode by construction: the
    entry comes first, with full confidence.
    """
    sig = signature_of(problem)
    entries = all_entries(ws)
    matches = rank(sig, f"{sig.text()} {problem.get('description', '')}", entries, len(entries))
    watched = problem.get("watch")
    for m in matches if watched else []:
        if m.entry_id == watched:
            m.score, m.why = 1.0, f"raised by the watch {watched} set; {m.why}"
    return sorted(matches, key=lambda m: -m.score)[:top]


def search(ws: Any, text: str, top: int = 10) -> list[Match]:
    """Free-text search of the ledger (symptoms, causes, fixes, notes, tags)."""
    entries = all_entries(ws)
    if not entries:
        return []
    scores = _text_scores(text, entries)
    found = [
        Match(entry_id=e.id, title=e.title, score=round(s, 4), structural=0.0, text=round(s, 4),
              fix=e.fix.action, why="text")
        for e, s in zip(entries, scores, strict=True) if s > 0
    ]
    return sorted(found, key=lambda m: -m.score)[:top]
