"""Text normalisation shared by training and inference, so both see the same input."""

import re

_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """TweetEval style: mentions become @user, URLs become 'http', whitespace is squashed."""
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
