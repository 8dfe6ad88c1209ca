"""Text normalisation shared by training and inference, so both see the same input."""

import re
from functools import lru_cache

_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_SPACE = re.compile(r"\s+")

# What a model does with emoji, from its card (`text.emoji`, models/registry.py): "keep" hands them to the tokenizer as
# they are (an English WordPiece vocabulary turns nearly every emoji into [UNK]: 😡 and 😍 looked the same), "names"
# writes each as its English name (😡 → " enraged face "), so the encoder reads what it means.
EMOJI_MODES = ("keep", "names")


@lru_cache(maxsize=1)
def _emoji_table() -> tuple[re.Pattern, dict[str, str], int]:
    """Runs of characters that occur in emoji, every emoji sequence's name, and the longest sequence's length.

    The names come from the `emoji` package (its EMOJI_DATA follows Unicode's emoji list, skin tones and ZWJ sequences
    included). One joined regex of all ~5,000 sequences took 740 µs on an emoji tweet; finding runs of emoji
    characters with one character class (ranges) and matching the longest known sequence at each position takes 15."""
    from emoji import EMOJI_DATA

    names = {e: data["en"].strip(":").replace("_", " ") for e, data in EMOJI_DATA.items()}
    points = sorted({ord(c) for e in names for c in e if not c.isascii()})  # keycaps' ASCII digits stay text
    ranges: list[list[int]] = []
    for point in points:
        if ranges and point == ranges[-1][1] + 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    runs = re.compile("[" + "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "")
                                    for a, b in ranges) + "]+")
    return runs, names, max(map(len, names))


def _name_run(run: str) -> str:
    _, names, longest = _emoji_table()
    out, i, n = [], 0, len(run)
    while i < n:
        for j in range(min(n, i + longest), i, -1):
            name = names.get(run[i:j])
            if name is not None:
                out.append(f" {name} ")
                i = j
                break
        else:  # a lone modifier or variation selector: no emoji of its own
            i += 1
    return "".join(out)


def emoji_to_names(text: str) -> str:
    """Every emoji written as its English name between spaces: "so slow 😡" → "so slow  enraged face " (callers squash
    the spaces). ASCII text (most English posts) costs one check."""
    if text.isascii():
        return text
    runs = _emoji_table()[0]
    return runs.sub(lambda m: _name_run(m.group()), text)


def normalize(text: str, emoji: str = "keep") -> str:
    """TweetEval style: mentions become @user, URLs become 'http', whitespace is squashed; with emoji="names" every
    emoji becomes its name (see EMOJI_MODES)."""
    if emoji == "names":
        text = emoji_to_names(text)
    elif emoji != "keep":
        raise ValueError(f"emoji must be one of {', '.join(EMOJI_MODES)}, got {emoji!r}")
    text = _MENTION.sub("@user", text)
    text = _URL.sub("http", text)
    return _SPACE.sub(" ", text).strip()


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_DIGITS = re.compile(r"\d(?:[\d\s().-]{5,}\d)")


def redact(text: str) -> str:
    """A copy safe to keep: e-mails, mentions, URLs and long digit runs (phones, cards) masked."""
    text = _EMAIL.sub("<email>", text)
    text = _MENTION.sub("@user", text)
    text = _URL.sub("<url>", text)
    return _DIGITS.sub("<number>", text)
