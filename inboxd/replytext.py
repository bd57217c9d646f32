"""What a person newly wrote in a reply: quotes, attributions, pasted originals, signatures and footers cut."""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING

from .message import readable_soup, tidy_lines

if TYPE_CHECKING:  # bs4 is imported when an HTML mail needs it: it costs a tenth of a second of every start
    from bs4 import BeautifulSoup
    from bs4.element import Tag

# A quoted line, however deep; leading spaces allowed because some clients indent the quote.
_QUOTE = re.compile(r"\s*>")
# An attribution ("On … wrote:"), matched against its lines joined by single spaces. Localised forms
# begin with a fixed word; the forms whose verb comes last may begin with a date or a name.
_ATTRIBUTION_FORMS = (
    r"(-+\s*)?On\b.+\bwrote:",  # English: Gmail, Apple, Thunderbird, Yahoo's "--- On …"
    r"[^<>]+<[^<>\s]+@[^<>\s]+>\s+wrote:",  # English, name-first: "Bob <bob@x.org> wrote:"
    r"Am\b.+\bschrieb\b.*:",  # German: "Am 02.04.2012 um 14:20 schrieb Bob <b@x>:"
    r"Le\b.+\ba écrit\s?:",  # French
    r"El\b.+\bescribió\s?:",  # Spanish
    r"Op\b.+\bschreef\b.*:",  # Dutch
    r"Il\b.+\bha scritto\s?:",  # Italian
    r"\S.*\bskrev\b.*:",  # Swedish, Danish, Norwegian: "Den 2 apr. 2012 kl. 14:20 skrev Bob <b@x>:"
    r"\S.*\bnapisał(\(a\))?\s?:",  # Polish
    r"\S.*\bнаписал(а|\(а\))?\s?:",  # Russian, also Android's date-first form
)
_ATTRIBUTION = re.compile("|".join(_ATTRIBUTION_FORMS))
# Every real attribution names an address or a time; this keeps "On Monday I wrote:" the person's own.
_ATTRIBUTION_SIGNAL = re.compile(r"@|\d[:.]\d\d")
# Lines that start an original the client pasted below, unprefixed: cut from there to the end.
_SEPARATOR = re.compile(
    r"(?i)-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|forwarded message"
    r"|weitergeleitete nachricht|message transféré)\s*-{2,}|begin forwarded message:")
# The first line of an Outlook header block (French puts a space before the colon) ...
_FROM = re.compile(r"\s*\*?(From|Von|De|Van|Da|Från|Fra|Od|От)\s?:")
# ... which counts only when one of these follows within three lines; a person's "From: …" stays.
_HEADER_FIELD = re.compile(
    r"\s*\*?(Sent|Date|To|Subject|Cc|Gesendet|Datum|An|Betreff|Envoyé|À|Objet|Enviado|Para|Asunto"
    r"|Verzonden|Aan|Onderwerp|Inviato|Oggetto|Skickat|Till|Ämne|Sendt|Til|Emne|Wysłano|Temat"
    r"|Отправлено|Кому|Тема|Дата)\s?:")
# Outlook's rule above a pasted original; only a header block below makes it one.
_UNDERSCORES = re.compile(r"\s*_{10,}")
# Whole-line footers that mail clients append to what the person wrote.
_FOOTER_FORMS = (
    r"(?i:sent from my \S.{0,40})",  # iPhone, iPad, Android, Samsung Galaxy smartphone, BlackBerry …
    r"(?i:sent from (outlook|mail for windows( \d+)?|yahoo mail\b.{0,30})\.?)",
    r"Sent with [A-Z]\w*( [A-Z]\w*){0,3}\.?",  # "Sent with Spark"; capitals keep "Sent with the bill."
    r"(?i:get outlook for (ios|android)\.?)",
    r"(?i:von meinem \S.{0,30} gesendet\.?)",  # German
    r"(?i:envoyé de mon \S.{0,30})",  # French
    r"(?i:enviado desde mi \S.{0,30})",  # Spanish
    r"(?i:verzonden (vanaf|met) mijn \S.{0,30})",  # Dutch
)
_FOOTER = re.compile("|".join(_FOOTER_FORMS))
_MAX_ATTRIBUTION_LINES = 3  # Gmail and Android wrap a long attribution over two or three lines
_MAX_ATTRIBUTION_CHARS = 300  # longer is not an attribution, and bounds the regexes' backtracking
# Inline tags do not break a line in a browser; keeping them joined keeps an attribution on one line.
_INLINE = frozenset({"a", "abbr", "b", "big", "cite", "code", "em", "font", "i", "mark", "q", "s", "small", "span",
                     "strike", "strong", "sub", "sup", "tt", "u"})
_QUOTE_BOX_CLASSES = frozenset({"gmail_quote", "yahoo_quoted"})  # on a <div>; every <blockquote> is one too
_QUOTED_TO_END_IDS = frozenset({"divRplyFwdMsg", "appendonsend"})  # Outlook: from here on it is the original


def new_text(text: str) -> str:
    """The text a person newly wrote in a reply; "" when nothing is left."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    spans = _attributions(lines)
    end = _cut_index(lines, spans)
    dropped = {i for start, stop in spans.items() for i in range(start, stop + 1)}
    parts: list[list[str]] = [[]]
    for i, line in enumerate(lines[:end]):
        if _QUOTE.match(line) or i in dropped:
            parts.append([])  # a quote between two parts of an interleaved reply
        elif not _FOOTER.fullmatch(line.strip()):
            parts[-1].append(line)
    joined = "\n\n".join("\n".join(part) for part in map(_trim_blank, parts) if part)
    return re.sub(r"\n{4,}", "\n\n", joined)  # three or more blank lines become one


def _trim_blank(lines: list[str]) -> list[str]:
    """The lines without blank ones at either end; inner indentation is the person's and stays."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _attributions(lines: list[str]) -> dict[int, int]:
    """First line -> last line of every attribution, unquoted and possibly wrapped over a few lines."""
    spans: dict[int, int] = {}
    for end, line in enumerate(lines):
        if line.endswith(":") and not _QUOTE.match(line):
            start = _attribution_start(lines, end)
            if start is not None:
                spans[start] = end
    return spans


def _attribution_start(lines: list[str], end: int) -> int | None:
    """Where the attribution ending at `end` begins, or None when these lines are not one."""
    start = end
    while True:
        block = " ".join(line.strip() for line in lines[start:end + 1])
        above = lines[start - 1] if start > 0 else ""
        # A line above with an unclosed "<" is the wrapped head of this one (Android, Gmail).
        wrapped = above.count("<") > above.count(">")
        if len(block) > _MAX_ATTRIBUTION_CHARS:
            return None
        # Without an address or a time, "… wrote:" counts only directly above a quoted block
        # ("On some day, Help wrote:"); "On Monday I wrote: …" in running text stays the person's own.
        if not wrapped and _ATTRIBUTION.fullmatch(block) and (_ATTRIBUTION_SIGNAL.search(block)
                                                              or _quote_follows(lines, end)):
            return start
        if end - start + 1 >= _MAX_ATTRIBUTION_LINES or not above.strip() or _QUOTE.match(above):
            return None
        start -= 1


def _cut_index(lines: list[str], spans: dict[int, int]) -> int:
    """The first line of whatever runs to the end unwanted: a signature or a pasted original."""
    for i, line in enumerate(lines):
        if _QUOTE.match(line):
            continue
        if line.strip() == "--" or _SEPARATOR.fullmatch(line.strip()) or _header_block(lines, i):
            return i
        # An attribution not followed by a quote introduces an unprefixed original (Yahoo, Outlook).
        if i in spans and not _quote_follows(lines, spans[i]):
            return i
    return len(lines)


def _header_block(lines: list[str], i: int) -> bool:
    """Whether line i starts a pasted header block ("From: … Sent: …") or Outlook's rule above one."""
    if _UNDERSCORES.fullmatch(lines[i]):
        return bool(_FROM.match(_next_nonblank(lines, i)))
    return bool(_FROM.match(lines[i])) and any(_HEADER_FIELD.match(line) for line in lines[i + 1:i + 4])


def _quote_follows(lines: list[str], end: int) -> bool:
    """Whether the first non-blank line after `end` is quoted."""
    return bool(_QUOTE.match(_next_nonblank(lines, end)))


def _next_nonblank(lines: list[str], i: int) -> str:
    """The first non-blank line after line i, or ""."""
    return next((line for line in itertools.islice(lines, i + 1, None) if line.strip()), "")


def html_quotes_marked(html: str) -> str:
    """Readable text of an HTML mail, every line its quote boxes hold prefixed with "> "."""
    lines = ((text.strip(), quoted) for text, quoted in _rendered_lines(readable_soup(html)))
    return tidy_lines("> " + line if quoted and line else line for line, quoted in lines)


def _rendered_lines(soup: BeautifulSoup) -> list[tuple[str, bool]]:
    """The text as lines, each with whether it is quoted; strings break lines only at non-inline tags."""
    from bs4.element import NavigableString, Tag
    texts: list[list[str]] = [[]]
    quoted = [False]
    open_tags: list[Tag] = []  # a stack instead of recursion: malformed mail nests thousands deep
    boxes, to_end, breaks = 0, False, False
    for element in soup.descendants:
        while open_tags and open_tags[-1] is not element.parent:
            closed = open_tags.pop()
            boxes -= _is_quote_box(closed)
            breaks = breaks or closed.name not in _INLINE
        if isinstance(element, Tag):
            open_tags.append(element)
            boxes += _is_quote_box(element)
            to_end = to_end or element.get("id") in _QUOTED_TO_END_IDS
            breaks = breaks or element.name not in _INLINE
        elif type(element) is NavigableString:  # not comments or doctypes
            for n, part in enumerate(str(element).split("\n")):
                if n or breaks:
                    texts.append([])
                    quoted.append(False)
                    breaks = False
                texts[-1].append(part)
                quoted[-1] = quoted[-1] or (bool(part.strip()) and (boxes > 0 or to_end))
    return [("".join(parts), flag) for parts, flag in zip(texts, quoted, strict=True)]


def _is_quote_box(tag: Tag) -> bool:
    """Whether the tag holds a quote: any <blockquote>, or a Gmail or Yahoo quote <div>."""
    return tag.name == "blockquote" or tag.name == "div" and not _QUOTE_BOX_CLASSES.isdisjoint(tag.get("class") or [])
