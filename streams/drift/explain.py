"""Explaining a drift window: its verdict recomputed from the stored sums (every bin), and what drives it in the stored
texts of the window: the tokens most over-represented against the reference, the languages it did not have, the
texts repeated most, with examples."""

from collections import Counter
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select

from streamsense.streams.drift.compare import judge
from streamsense.streams.drift.windows import ALL, drift_windows, utc
from streamsense.streams.schema import predictions

EXCERPT = 160
TEXTS_MAX = 5000


class WindowNotFound(LookupError):
    pass


def find_window(conn, version: str | None, scope: str = ALL, at: datetime | None = None):
    """The stored window of (version, scope) holding `at` (None: the newest); version None: any model's newest."""
    c = drift_windows.c
    stmt = select(c.model_version, c.scope, c.window_start, c.window_seconds, c.messages, c.sums, c.status) \
        .where(c.scope == scope)
    if version:
        stmt = stmt.where(c.model_version == version)
    if at is not None:
        stmt = stmt.where(c.window_start <= at)
    row = conn.execute(stmt.order_by(c.window_start.desc(), c.model_version).limit(1)).first()
    if row is None or (at is not None and utc(row.window_start) + timedelta(seconds=row.window_seconds) <= at):
        what = f"model {version}" if version else "any model"
        when = f" at {at.isoformat()}" if at else ""
        raise WindowNotFound(f"no drift window for {what}, scope {scope}{when}")
    return row


def explain(conn, references, version: str | None = None, scope: str = ALL, at: datetime | None = None,
            min_messages: int | None = None, tokenizer=None, examples: int = 3) -> dict:
    """The window's verdict and its drivers (tokens, languages, repeated texts) with example texts where stored."""
    row = find_window(conn, version, scope, at)
    version, start = row.model_version, utc(row.window_start)
    end = start + timedelta(seconds=row.window_seconds)
    reference = references.get(version)
    verdict = judge(reference, np.frombuffer(row.sums, dtype=np.float64), min_messages)
    p = predictions.c
    when = func.coalesce(p.produced_at, p.stored_at)
    where = [p.model_version == version, when >= start, when < end]
    if scope.startswith("topic:"):
        where.append(p.source_topic == scope[6:])
    texts = conn.execute(select(p.text, p.lang).where(*where).limit(TEXTS_MAX)).all()
    stored = [(t, lang) for t, lang in texts if t]
    out = {"model_version": version, "scope": scope, "window_start": start.isoformat(), "window_end": end.isoformat(),
           "stored_status": row.status, **verdict, "texts_read": len(stored), "drivers": {}}
    drivers = out["drivers"]
    repeated = conn.execute(select(p.text_sha256, func.count().label("n"), func.min(p.text)).where(*where)
                            .group_by(p.text_sha256).having(func.count() > 1)
                            .order_by(func.count().desc()).limit(examples)).all()
    drivers["repeated texts"] = [{"count": n, "text": (t or "(text not stored)")[:EXCERPT]} for _, n, t in repeated]
    if reference is not None and stored:
        layout = reference.layout
        a, b = layout.histograms["language"]
        ref_lang = dict(zip(layout.bin_labels("language"), reference.sums[a:b] / max(reference.messages, 1)))
        seen = Counter(lang or "und" for _, lang in stored)
        langs = []
        for lang, n in seen.most_common():
            share, before = n / len(stored), ref_lang.get(lang, ref_lang.get("other", 0.0))
            if share > before + 0.01:
                langs.append({"lang": lang, "reference": round(before, 4), "window": round(share, 4),
                              "examples": [t[:EXCERPT] for t, l in stored if l == lang][:examples]})
        drivers["languages"] = langs[:5]
    if reference is not None and stored and tokenizer is not None:
        drivers["tokens"] = _tokens(reference, stored, tokenizer, examples)
    return out


def _tokens(reference, stored, tokenizer, examples: int) -> list[dict]:
    """Tokens whose share of the window's tokens most exceeds the reference's (PSI-like term), with examples."""
    encoded = tokenizer.tokenize([t for t, _ in stored])
    ids = encoded.ids
    counts = Counter(t for row in ids for t in row)
    total = max(sum(counts.values()), 1)
    top = reference.top_tokens
    floor = (min(top.values()) / 2 if top else 1) / max(reference.tokens_total, 1)
    scored = []
    for token, n in counts.items():
        w = n / total
        r = top.get(token, 0) / max(reference.tokens_total, 1) or floor
        if w > r:
            scored.append(((w - r) * np.log(w / r), token, w, r))
    scored.sort(reverse=True)
    out = []
    vocab = tokenizer.tokenizer
    for score, token, w, r in scored[:10]:
        holding = [(row.count(token) / max(len(row), 1), t) for (t, _), row in zip(stored, ids) if token in row]
        shown = list(dict.fromkeys(t[:EXCERPT] for _, t in sorted(holding, key=lambda x: -x[0])))[:examples]
        out.append({"token": vocab.id_to_token(token), "reference": round(r, 5), "window": round(w, 5),
                    "score": round(float(score), 5), "examples": shown})
    return out
