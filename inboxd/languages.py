"""Languages: which template set answers a requester, and dates written in that language (Babel).

Pure: no storage, no network. A language is a tag as Babel knows it (`de`, `fr`, `pt-BR`); a set is
the tag of a template folder, or the team's default language, whose set is the templates folder itself.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime, tzinfo
from functools import cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, get_date_format, get_datetime_format, get_time_format

NOT_SET = {"en": "not set", "de": "nicht festgelegt"}  # a date a template shows that is None; else "–"


def known(tag: str) -> bool:
    """Babel knows this language tag (`de`, `pt-BR`; not `german` or `xx`)."""
    try:
        _locale(tag)
    except (UnknownLocaleError, ValueError, TypeError):
        return False
    return True


def choose(rule: str | None, content_language: str | None, sets: Collection[str], default: str) -> str:
    """The set a requester is answered in: the rule's, else the mail's first tag with a set, else the team's.

    A tag with a region falls back to its language (`de-CH` to `de`) when there is no set for the region;
    tags with no set are passed over. Tags compare without regard to case; the set's own spelling is returned.
    """
    by_case = {s.lower(): s for s in sets}
    if rule:
        return by_case.get(rule.lower(), rule)
    for tag in (content_language or "").split(","):
        tag = tag.strip().lower().replace("_", "-")  # de_CH: a locale name, seen where a tag belongs
        for candidate in (tag, tag.partition("-")[0]):
            if candidate in by_case:
                return by_case[candidate]
    return default


def when(moment: datetime | None, tz: tzinfo, language: str) -> str:
    """`Thursday 26 November 2026, 17:30`, `Donnerstag, 26. November 2026, 17:30`: in the team's timezone."""
    if moment is None:
        return _not_set(language)
    local = moment.astimezone(tz)
    if _english(language):  # the wording inboxd always had, byte for byte
        return f"{local:%A} {local.day} {local:%B %Y, %H:%M}"
    return format_datetime(local, _patterns(language)[0], tzinfo=tz, locale=_locale(language))


def day(moment: datetime | None, tz: tzinfo, language: str) -> str:
    """`Thursday 26 November`, `Donnerstag, 26. November`: in the team's timezone."""
    if moment is None:
        return _not_set(language)
    local = moment.astimezone(tz)
    if _english(language):
        return f"{local:%A} {local.day} {local:%B}"
    return format_datetime(local, _patterns(language)[1], tzinfo=tz, locale=_locale(language))


def _english(language: str) -> bool:
    return language.lower().partition("-")[0] == "en"


def _not_set(language: str) -> str:
    return NOT_SET.get(language.lower().partition("-")[0], "–")


@cache
def _locale(tag: str) -> Locale:
    return Locale.parse(tag, sep="-")


@cache
def _patterns(language: str) -> tuple[str, str]:
    """The language's own patterns: its full date and short time as CLDR joins them; its weekday, day and month."""
    locale = _locale(language)
    moment = str(get_datetime_format("full", locale)).replace("{1}", get_date_format("full", locale).pattern) \
        .replace("{0}", get_time_format("short", locale).pattern)
    short = locale.datetime_skeletons.get("MMMMEd")
    day_pattern = re.sub(r"E+", "EEEE", short.pattern) if short else get_date_format("long", locale).pattern
    return moment, day_pattern
