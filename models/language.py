"""Language identification per message, and the languages a model supports (docs/architecture.md, "Languages").

The shipped model is English-only: its tokenizer reads Chinese as [UNK] and its heads give a confident `neutral` /
`low` to text they cannot read. The pipeline therefore tags every message with the language it is written in
(`identify`) and flags what the model does not support (`model_languages`).

How a text is identified, cheapest first (measured in docs/benchmarks.md, "Language identification"):

1. **Chinese, Japanese, Korean by script.** Han, Kana and Hangul are counted with one C-level regex each; a text with
   at least two CJK characters and no more Latin words than CJK characters is `ko` (Hangul the majority), `ja` (Kana
   at least a fifth of Han + Kana) or `zh`. Exact where the script decides, and cheap.
2. **Too little text: `und`.** Outside CJK, fewer than two words of two or more letters (empty, emoji only, "ok",
   "@user", a number) says nothing reliable about the language; `und` counts as supported, so such messages are
   never flagged.
3. **Everything else: CLD2** (pycld2, Google's Compact Language Detector 2 as a C++ extension; its tables are compiled
   into the wheel, nothing is downloaded) in best-effort mode, which names a language for short texts where CLD2
   would otherwise say "unknown". It also reads every other script (Cyrillic, Arabic, Greek, Thai, Devanagari…).

Codes are ISO 639-1 (`en`, `zh`, `es`…) where the language has one, else the 3-letter ISO 639-3 code CLD2 gives
(`sco`, `haw`), and `und` where it cannot tell.
"""

import re
from collections.abc import Iterable, Mapping, Sequence

import pycld2

UNDETERMINED = "und"
#: What a model supports when its card has no `languages` list: every model shipped so far was trained on English.
DEFAULT_LANGUAGES = ("en",)

# Character ranges of the scripts decided here (a regex character class's inside); models/risk.py uses them too.
HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
KANA = r"\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
HANGUL = r"\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
_CJK = re.compile(f"[{HAN}{KANA}{HANGUL}]")
_KANA_CHARS = re.compile(f"[{KANA}]")
_HANGUL_CHARS = re.compile(f"[{HANGUL}]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_WORD = re.compile(r"[^\W\d_]{2,}")  # two or more letters, any script
_MENTION_OR_URL = re.compile(r"@\w+|\w+://\S+|www\.\S+")
_SHORT = 40  # characters: only a text this short can have fewer than two words worth the name (checked below it)
_MAX_CHARS = 2000  # what is identified of a longer text: its beginning (a 2 MB message costs no more than a post)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: CLD2's codes that differ from ISO 639-1 (it keeps some withdrawn ones).
_CLD2_CODES = {"iw": "he", "jw": "jv", "in": "id", "ji": "yi", "mo": "ro", "un": UNDETERMINED,
               "xx": UNDETERMINED, "zzb": UNDETERMINED, "zzh": UNDETERMINED, "zzp": UNDETERMINED}

_detect = pycld2.detect


def identify(texts: Iterable[str]) -> list[str]:
    """The language of each text, in order: an ISO 639-1 code (`en`, `zh`, `es`…), the ISO 639-3 code for a
    language that has none, or `und` where the text is too short, empty or emoji only."""
    return [identify_one(text) for text in texts]


def identify_one(text: str) -> str:
    text = text[:_MAX_CHARS]  # the same object when shorter
    if text.isascii():  # most traffic: no CJK, no other script; only CLD2 (or the short-text rule) decides
        if len(text) < _SHORT and len(_LATIN_WORD.findall(_MENTION_OR_URL.sub(" ", text))) < 2:
            return UNDETERMINED
        return _cld2(text)
    if _CJK.search(text) is not None:
        cjk = len(_CJK.findall(text))
        if cjk >= 2 and cjk >= len(_LATIN_WORD.findall(text)):
            hangul = len(_HANGUL_CHARS.findall(text))
            if 2 * hangul > cjk:
                return "ko"
            kana = len(_KANA_CHARS.findall(text))
            if kana >= 2 and 5 * kana >= cjk - hangul:
                return "ja"
            return "zh"
    if len(text) < _SHORT and len(_WORD.findall(_MENTION_OR_URL.sub(" ", text))) < 2:
        return UNDETERMINED
    return _cld2(text)


def _cld2(text: str) -> str:
    try:
        found = _detect(text, bestEffort=True)
    except (pycld2.error, UnicodeError, ValueError):
        # lone surrogates (not UTF-8) or bytes CLD2 refuses (some control characters): identify what is left
        cleaned = _CONTROL.sub(" ", text).encode("utf-8", "replace").decode("utf-8")
        try:
            found = _detect(cleaned, bestEffort=True)
        except (pycld2.error, UnicodeError, ValueError):
            return UNDETERMINED
    code = found[2][0][1]
    code = code.split("-", 1)[0]  # zh-Hant → zh
    return _CLD2_CODES.get(code, code)


def model_languages(card: Mapping | None) -> tuple[str, ...]:
    """The languages a model card says the model supports: its optional `languages` list (ISO 639-1 codes), else
    `DEFAULT_LANGUAGES` (English: cards without the field, v3 included, describe English-only models)."""
    languages = (card or {}).get("languages")
    if not languages:
        return DEFAULT_LANGUAGES
    if isinstance(languages, str) or not all(isinstance(code, str) and code.strip() for code in languages):
        raise ValueError(f"model card: languages must be a list of language codes, not {languages!r}")
    return tuple(dict.fromkeys(code.strip().lower() for code in languages))


def is_supported(lang: str, languages: Sequence[str] | frozenset[str]) -> bool:
    """Whether the model reads `lang`: one of its languages, or `und` (too short to tell: never flagged)."""
    return lang == UNDETERMINED or lang in languages
