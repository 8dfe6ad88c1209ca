"""What a windowed alert is about: the terms that set its window's messages apart from a baseline, a few
representative messages, and near-duplicate (bot-like) bursts.

Computed once per alert from rows the store already holds (the window's and its baseline windows', capped), never
per message. For each term (counted once per message) with y of the window's N messages and b of the baseline's M:

- reported when y >= MIN_MESSAGES and P(X >= y) < FAMILY_ERROR / (distinct terms of the window), X ~ Binomial(y + b,
  N / (N + M)): the exact chance that the window holds that many of the term's messages, Bonferroni-corrected over
  every term the window tests (~3.7-3.9 as a z; 1.96 on a few hundred terms per window would name a dozen chance
  words in every window). `z` is that p as a one-sided z-score.
- `log_odds`: Monroe, Colaresi & Quinn (2008), "Fightin' Words", Political Analysis 16(4): with the prior
  a_w = A * (y_w + b_w) / (n + m) over term occurrences n (window) and m (baseline),
  delta_w = log((y_w + a_w) / (n + A - y_w - a_w)) - log((b_w + a_w) / (m + A - b_w - a_w)). Their z,
  delta_w / sqrt(1 / (y_w + a_w) + 1 / (b_w + a_w)), is not the gate: for a term absent from a small baseline its
  variance is the prior's (a text in 100 of 162 window messages and none of 19 baseline ones scores 2.5).

Tokens: English is lower-cased; URLs, @mentions, numbers and a compact list of stop words are dropped, a hashtag
counts as its word; terms are words and pairs of adjacent kept words. Chinese (no spaces) is cut into character
bigrams within runs of Han characters, pairs holding a particle (的 了 吗 …) dropped: measured against the jieba
dictionary segmenter on the committed fixtures (docs/alerts.md, "What a spike is about"), bigrams found the staged
words as well, 5-10x faster, with no dependency and no dictionary to load. Reported phrases that chain by a unit are
joined back ("拉肚" + "肚子" → "拉肚子", "giving away" + "away free" → "giving away free")."""

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import NormalDist

MIN_MESSAGES = 3  # a term in fewer of the window's messages is never reported
FAMILY_ERROR = 0.05  # chance that an ordinary window names any term at all (Bonferroni over the terms tested)
PRIOR = 300.0  # A: the Fightin' Words prior's weight, in term occurrences (ranks terms; the test gates them)
TOP_TERMS = 5  # in the alert's evidence
SUMMARY_TERMS = 3  # in its summary line
EXAMPLES = 3
BOT_SHARE = 0.5  # the window's most repeated text in at least this share of its messages: a bot-like burst
WINDOW_ROWS = 500  # rows read from the window (its most recent)
BASELINE_ROWS = 2000  # rows read from the baseline windows (their most recent)

# A compact English stop list: function words, auxiliaries, pronouns, and the fillers of social posts.
STOP = frozenset("""
a about above after again against all am an and any are aren as at be because been before being below between both
but by can cannot could couldn did didn do does doesn doing don down during each few for from further had hadn has
hasn have haven having he her here hers herself him himself his how i if in into is isn it its itself just let me
more most my myself no nor not now of off on once only or other ought our ours ourselves out over own same shan she
should shouldn so some such than that the their theirs them themselves then there these they this those through to
too under until up very was wasn we were weren what when where which while who whom why will with won would wouldn
you your yours yourself yourselves ll re ve im ive id youre dont cant wont didnt doesnt isnt thats its gonna wanna
get got gets go goes going gone also even still yet ever really much many one two like via amp rt u ur lol oh ok
okay yes yeah hey hi may might must shall us would could today tomorrow tonight day time new just now see know
""".split())

_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_MENTION = re.compile(r"@\w+")
_WORD = re.compile(r"[a-z]+(?:['’][a-z]+)*")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_ZH_PARTICLES = frozenset("的了吗呢吧啊呀么着过哦嘛啦")
_SPACE = re.compile(r"\s+")
_BREAK = re.compile(r"[.!?;:,()\[\]\"“”…|/]+|\s-+\s")
_Z_CACHE: dict[int, float] = {}


def _english(text: str) -> list[str]:
    words = []
    for part in _BREAK.split(text):  # no pair across punctuation
        for match in _WORD.finditer(part):
            word = match.group().replace("’", "'")
            word = word[:-2] if word.endswith("'s") else word.replace("'", "")
            words.append(word if len(word) > 1 and word not in STOP else None)
        words.append(None)
    out = [w for w in words if w]
    out += [f"{a} {b}" for a, b in zip(words, words[1:]) if a and b and a != b]
    return out


def _chinese(run: str) -> list[str]:
    return [run[i:i + 2] for i in range(len(run) - 1)
            if run[i] not in _ZH_PARTICLES and run[i + 1] not in _ZH_PARTICLES and run[i] != run[i + 1]]


def terms_of(text: str) -> set[str]:
    """The distinct terms of one message: English words and adjacent pairs, Chinese character bigrams."""
    text = _MENTION.sub(" ", _URL.sub(" ", text or "")).lower()
    out = set()
    for run in _HAN.findall(text):
        out.update(_chinese(run))
    out.update(_english(_HAN.sub(" . ", text)))  # a Han run breaks English pairs
    return out


def normalised(text: str) -> str:
    """A text with case, URLs, mentions and spacing taken out: a copy-paste campaign's posts become equal."""
    return _SPACE.sub(" ", _MENTION.sub(" ", _URL.sub(" ", text or "")).lower()).strip(" .!?…")


def threshold(tested: int, family_error: float = FAMILY_ERROR) -> float:
    """The z a term must pass when `tested` terms are tested (one-sided, Bonferroni)."""
    tested = max(tested, 1)
    if tested not in _Z_CACHE:
        _Z_CACHE[tested] = NormalDist().inv_cdf(1 - family_error / tested)
    return _Z_CACHE[tested]


def tail(y: int, k: int, q: float) -> float:
    """P(X >= y) for X ~ Binomial(k, q): the chance that `y` or more of a term's `k` messages fall in the window by
    chance, when the window holds the share `q` of all the messages."""
    if y <= 0:
        return 1.0
    if q >= 1.0:
        return 1.0
    log_q, log_r = math.log(q), math.log1p(-q)
    terms = [math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1) + i * log_q + (k - i) * log_r
             for i in range(y, k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def z_of(p: float) -> float:
    """The one-sided z-score of a p-value (p = 0.025 → 1.96)."""
    return -NormalDist().inv_cdf(min(max(p, 1e-300), 0.5))


def distinctive(window: Sequence[set[str]], baseline: Sequence[set[str]], prior: float = PRIOR,
                min_messages: int = MIN_MESSAGES, family_error: float = FAMILY_ERROR) -> list[dict]:
    """Terms over-represented in `window` (each message's terms) against `baseline`, most distinctive first:
    [{"term", "count" (messages of the window holding it), "baseline" (of the baseline's), "z", "log_odds"}], only
    those past the corrected threshold.

    `log_odds`: the Fightin' Words log-odds ratio with an informative Dirichlet prior (module docstring). `z`: the
    one-sided z-score of the exact test "this many of the term's messages in the window by chance" (binomial, the
    window's share of all messages), which holds for the small counts of a window: the log-odds' own z divides by
    sqrt(1/(y + a) + 1/(b + a)), which for a term absent from a small baseline is dominated by the prior (a
    spam text in 100 of 162 window messages and none of 19 baseline ones scores z 2.5 there, 5.1 here)."""
    y, b = Counter(), Counter()
    for doc in window:
        y.update(doc)
    for doc in baseline:
        b.update(doc)
    n, m = sum(y.values()), sum(b.values())
    if not n or not m or not window or not baseline:
        return []
    z_min = threshold(len(y), family_error)  # every term of the window is tested, not only the frequent ones
    p_max = family_error / len(y)
    share = len(window) / (len(window) + len(baseline))
    total = n + m
    found = []
    for t, yw in y.items():
        if yw < min_messages:
            continue
        bw = b.get(t, 0)
        if yw / len(window) <= bw / len(baseline):
            continue
        p = tail(yw, yw + bw, share)
        if p >= p_max:
            continue
        a = prior * (yw + bw) / total
        delta = math.log((yw + a) / (n + prior - yw - a)) - math.log((bw + a) / (m + prior - bw - a))
        found.append({"term": t, "count": yw, "baseline": bw, "z": round(max(z_of(p), z_min), 1),
                      "log_odds": round(delta, 2)})
    found.sort(key=lambda f: (-f["z"], -f["log_odds"], f["term"]))
    return _joined(_subsumed(found))


def _subsumed(found: list[dict]) -> list[dict]:
    """Leave out a word whose messages are mostly those of a pair holding it that is reported too."""
    pairs = [f for f in found if " " in f["term"]]
    return [f for f in found if " " in f["term"] or not any(
        f["term"] in p["term"].split(" ") and p["count"] >= 0.8 * f["count"] for p in pairs)]


def _units(term: str) -> list[str]:
    return list(term) if _HAN.fullmatch(term) else term.split(" ")


def _joined(found: list[dict]) -> list[dict]:
    """Join the phrases reported together that chain by a unit and hold about the same messages into one:
    Chinese bigrams overlapping by a character ("拉肚" + "肚子" → "拉肚子"), English pairs by a word ("giving away" +
    "away free" + "free tickets" → "giving away free tickets"). The joined phrase keeps the smallest count and z."""
    phrases = [f for f in found if len(_units(f["term"])) == 2]
    if len(phrases) < 2:
        return found
    used, out = set(), []
    for f in found:
        if f["term"] in used:
            continue
        if f not in phrases:
            out.append(f)
            continue
        units, parts, han = _units(f["term"]), [f], bool(_HAN.fullmatch(f["term"]))
        grown = True
        while grown:
            grown = False
            for g in phrases:
                if g["term"] in used or g in parts or bool(_HAN.fullmatch(g["term"])) != han \
                        or abs(g["count"] - f["count"]) > 0.2 * f["count"]:
                    continue
                first, last = _units(g["term"])
                if first == units[-1] and last not in units:
                    units, grown = units + [last], True
                elif last == units[0] and first not in units:
                    units, grown = [first] + units, True
                else:
                    continue
                parts.append(g)
        used.update(p["term"] for p in parts)
        out.append({**min(parts, key=lambda p: (p["z"], p["count"])),
                    "term": ("" if han else " ").join(units), "count": min(p["count"] for p in parts),
                    "baseline": max(p["baseline"] for p in parts)})
    return out


def _pieces(term: str) -> list[str]:
    """What a message holds when it holds `term`: a word or pair itself, a joined English phrase its pairs (a
    Chinese phrase is found in the text)."""
    units = _units(term)
    if _HAN.fullmatch(term) or len(units) <= 2:
        return [term]
    return [f"{a} {b}" for a, b in zip(units, units[1:])]


def duplicates(keys: Sequence[str]) -> dict:
    """How many distinct texts `keys` (normalised texts or hashes) hold, and the most repeated one's count."""
    counts = Counter(keys)
    top = counts.most_common(1)[0][1] if counts else 0
    return {"messages": len(keys), "distinct": len(counts), "top_count": top,
            "bot_like": bool(keys) and top >= 5 and top >= BOT_SHARE * len(keys)}


def explain(window: Sequence[dict], baseline: Sequence[dict]) -> dict:
    """What a window is about, from its stored rows and its baseline's ({"text", "text_sha256", "risk_score"} each;
    `text` None where the store keeps none): terms, up to EXAMPLES representative messages (those holding the
    most of the terms, then the riskiest; one per distinct text), and the duplicates of the window."""
    texts = [r.get("text") for r in window]
    has_text = any(texts)
    keys = [normalised(t) if t else (r.get("text_sha256") or "") for t, r in zip(texts, window)]
    about = {"messages": len(window), "baseline_messages": len(baseline), "duplicates": duplicates(keys)}
    if not has_text:
        about.update(terms=[], examples=[], note="the store keeps no message text (STREAMSENSE_STORE_TEXT=hash): "
                                                 "no terms or examples")
        return about
    docs = [terms_of(t) if t else set() for t in texts]
    found = distinctive(docs, [terms_of(r.get("text") or "") for r in baseline])
    about["terms"] = found[:TOP_TERMS]
    parts = [_pieces(f["term"]) for f in found[:TOP_TERMS]]  # each term as the pieces a message must hold

    def score(i: int) -> tuple:
        doc, text = docs[i], (texts[i] or "").lower()
        hits = sum(all(p in doc or p in text for p in pieces) for pieces in parts)
        return (-hits, -(window[i].get("risk_score") or 0.0), i)

    examples, seen = [], set()
    for i in sorted((i for i in range(len(window)) if texts[i]), key=score):
        if parts and score(i)[0] == 0:  # with terms, only the messages that hold some
            break
        if keys[i] in seen:
            continue
        seen.add(keys[i])
        examples.append({"message_id": window[i].get("message_id"), "text": texts[i][:200]})
        if len(examples) == EXAMPLES:
            break
    about["examples"] = examples  # as stored: a redacted store's redacted texts
    return about


def describe(about: dict) -> str:
    """One line for an alert's summary: "about: 'delayed' (41, z 6.2), 'gate' (…); 48 of 54 messages are one
    text (bot-like)"; "" when there is nothing to say."""
    parts = []
    if about.get("terms"):
        parts.append("about: " + ", ".join(f"'{t['term']}' ({t['count']}, z {t['z']})"
                                           for t in about["terms"][:SUMMARY_TERMS]))
    elif about.get("note", "").startswith("the store keeps no"):
        parts.append("no terms: the store keeps no text")
    elif about.get("messages"):
        parts.append("no term stands out from the baseline")
    dup = about.get("duplicates") or {}
    if dup.get("bot_like"):
        parts.append(f"{dup['top_count']} of {dup['messages']} messages are one text (bot-like; "
                     f"{dup['distinct']} distinct)")
    return "; ".join(parts)



REPORT_WINDOW_SECONDS = 300  # the `top-terms` report's windows: those of the default negative_share_spike rule
REPORT_BASELINE_WINDOWS = 6
REPORT_ROWS = 20000  # the newest stored rows the report reads
REPORT_MIN_BASELINE = 20  # a window's baseline needs this many messages


def top_terms(rows: Iterable[tuple], window_seconds: int = REPORT_WINDOW_SECONDS,
              baseline_windows: int = REPORT_BASELINE_WINDOWS) -> list[tuple]:
    """The `top-terms` report from stored rows (kind, grp, event_at, text): per kind, group and window of event
    time, the terms that set the window apart from the group's previous `baseline_windows` windows, as rows
    (kind, grp, window_start, window_end, term, messages, baseline, z, log_odds, window_messages, baseline_messages),
    newest window first, most distinctive term first. Each text is tokenized once."""
    from datetime import datetime, timedelta, timezone

    from streamsense.streams.alerting.rules import window_index

    windows: dict[tuple, list[set[str]]] = {}
    for kind, grp, at, text in rows:
        if text:
            windows.setdefault((kind, grp, window_index(at, window_seconds)), []).append(terms_of(text))
    out = []
    size = timedelta(seconds=window_seconds)
    for (kind, grp, index), docs in sorted(windows.items(), key=lambda item: (-item[0][2], item[0][0], item[0][1])):
        baseline = [d for i in range(1, baseline_windows + 1) for d in windows.get((kind, grp, index - i), [])]
        if len(baseline) < REPORT_MIN_BASELINE:
            continue
        start = datetime.fromtimestamp(index * window_seconds, timezone.utc)
        for t in distinctive(docs, baseline)[:TOP_TERMS]:
            out.append((kind, grp, start, start + size, t["term"], t["count"], t["baseline"], t["z"], t["log_odds"],
                        len(docs), len(baseline)))
    return out
