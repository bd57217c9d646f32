"""Conversations: what a mail on an existing item means (commands, relay, reply, rating, thanks), decided purely.

`decide` returns a complete, immutable `Plan`: the tracker writes it as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import authres

from .commands import MEMBER_KEYWORDS, CommandContext, help_table, plan_commands, split_keywords, with_answer
from .config import Config
from .domain import OPEN_STATUSES, EventLine, ItemState, ItemView, Plan, PlanKind, Reply, Status, frozen
from .message import InboundMessage
from .promises import clock_changes
from .replytext import html_quotes_marked, new_text

# A score alone, or followed by punctuation and a comment ("2/5 - too slow"); "3 printers are…" is news.
_RATING = re.compile(r"\s*([1-5])(?:\s*(?:/|out of|of)\s*5|\s*stars?|\s*points?)?\s*(?:$|[-–—:,.!)]+(?!\d)\s*(.*))",
                     re.IGNORECASE | re.DOTALL)
_THANKS = re.compile(r"\b(thanks?|thank\s*you|thx|ty|cheers|danke|merci|gracias|grazie|tack|bedankt|спасибо)\b",
                     re.IGNORECASE)
# Words that turn a thank-you into news: "Thanks, but it is still broken" reopens.
_BUT = re.compile(r"\b(but|still|not|no|however|though|although|\w+n't|cannot|anymore|broken|problem|issue|error"
                  r"|wrong|fail\w*|aber|noch|nicht|kein\w*|mais|pas|encore|pero|todavía)\b", re.IGNORECASE)
_SHORT = 12  # words: a thank-you with more than this is new substance
# A member's words go to the requester by default only in a reply to the mail that brought the request
# to the team; a reply to anything else inboxd sends the team (reminders, escalations, a low rating,
# digests, forwarded replies, command answers) stays a team note unless it says #reply.
RELAYED_BY_DEFAULT = ("assigned", "new_request")
_TEAM_MAIL = {"owner_reminder": "reminder", "escalation": "escalation", "low_rating": "low rating",
              "digest": "digest", "requester_reply": "forwarded reply", "command_ok": "answer to your keywords",
              "command_error": "answer to your keywords", "help": "keyword list", "forwarded": "forwarded request"}
_OUR_ANSWERS = ("command_ok", "command_error", "help")  # inboxd's answers to a member's mail
_NOTE_LINE = re.compile(r"#note\b", re.IGNORECASE)
NOTE_WITHIN_LINES = 5  # `#note` on any of the first lines makes the whole mail a note


@dataclass
class _Draft:
    """A plan while it is being decided; `_finish` turns it into the immutable Plan."""

    kind: PlanKind
    changes: dict[str, Any] = field(default_factory=dict)
    events: list[EventLine] = field(default_factory=list)
    mails: list[Reply] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    away: list[tuple[str, datetime | None]] = field(default_factory=list)


def reply_text(msg: InboundMessage) -> str:
    """What the sender newly wrote: quotes, attributions, signatures and footers cut."""
    return new_text(html_quotes_marked(msg.html) if msg.html else msg.text)


def changes_between(before: ItemState, after: ItemState) -> dict[str, Any]:
    """The item fields to update."""
    changed = {name: getattr(after, name) for name in ItemState.__dataclass_fields__
               if getattr(after, name) != getattr(before, name)}
    if "tags" in changed:
        changed["tags"] = list(changed["tags"])
    return changed


def authentication_problem(msg: InboundMessage, config: Config, secret_ok: bool) -> str | None:
    """Why a member's mail can't be trusted to carry commands, or None when it can."""
    if msg.sender_ambiguous:  # decode leaves `sender` empty then; this guards any other way in
        return f"its From line names no one address we can be sure of ({msg.sender_problem})"
    rules = config.commands
    if rules.require_secret and not secret_ok:
        return ("it was not sent to this item's own reply address; reply to a mail from inboxd "
                "(its Reply-To carries a secret) rather than writing a new one")
    if rules.authserv_id:
        domain = msg.sender.partition("@")[2]
        if not _authenticated(msg, rules.authserv_id, domain):
            return f"{rules.authserv_id} did not report a DMARC or DKIM pass for {domain}"
    return None


def _authenticated(msg: InboundMessage, authserv_id: str, domain: str) -> bool:
    """The topmost Authentication-Results of our own server says DMARC or DKIM passed for the domain.

    Only that one header counts (RFC 8601: ours is added on top; those below may be the sender's).
    It is recognised by its first word even when unreadable, and unreadable means no: a HELO or
    MAIL FROM our server copies into it must not make us skip to a forged header further down.
    """
    def first_word(value: str) -> str:  # the authserv-id, read leniently (comments dropped)
        words = re.sub(r"\([^()]*\)", " ", value.partition(";")[0]).split()
        return words[0].strip('"').lower() if words else ""

    values = msg.headers.get("authentication-results", ())
    ours = next((value for value in values if first_word(value) == authserv_id.lower()), None)
    if ours is None:
        return False
    try:
        results = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {ours}").results
    except Exception:  # authres raises its own syntax errors (and others) on malformed headers
        return False
    passed = False
    for result in results:
        names = {p.name: (p.value or "").lower().lstrip("@") for p in result.properties}
        signed = {"dmarc": names.get("from"), "dkim": names.get("d")}.get(result.method)
        if result.method == "dmarc" and signed == domain and result.result == "fail":
            return False  # DMARC's own verdict on the domain stands: a "pass" beside it was put there
        if result.result == "pass" and signed and \
                (signed == domain or result.method == "dkim" and domain.endswith("." + signed)):
            passed = True
    return passed


def decide(config: Config, item: ItemView, msg: InboundMessage, text: str, secret_ok: bool,
           now: datetime, answers: str | None = None) -> Plan:
    """What this mail means for the item it belongs to, complete: the tracker only writes it.

    `answers` is the kind of our mail it replies to (threads.Thread.answers), if it is one of ours.
    """
    team = config.team
    keywords, _ = split_keywords(text)
    if team.speaks_for_team(msg.sender) and (keywords or msg.sender != item.requester):
        draft = _from_team(config, item, msg, text, secret_ok, now, answers)
    else:
        draft = _from_outside(config, item, msg, text, now)
        if keywords:  # from anyone else a keyword is plain text: say so in the history
            draft.events.append((msg.sender or "unknown sender", "refused",
                                 f"{' '.join('#' + k.name for k in keywords)} from {msg.sender or 'unknown sender'} "
                                 f"ignored: only {team.name} members and the lead may use keywords"))
    return _finish(config, item, draft, now)


def _finish(config: Config, item: ItemView, draft: _Draft, now: datetime) -> Plan:
    """The draft with what follows from it: the date's clock paused or running again, the requester told."""
    changes = dict(draft.changes)
    if draft.kind != PlanKind.NEW_ITEM:
        before = {"status": item.status, "waiting_on": item.waiting_on, "due_at": item.due_at,
                  "paused_at": item.paused_at}
        timing, line = clock_changes(before, changes, now, config.calendar)
        changes.update(timing)
        if line:
            draft.events.append(("inboxd", "clock", line))
        if any(item.requester and item.requester in mail.to for mail in draft.mails):
            changes["last_told_at"] = now
    return Plan(draft.kind, frozen(changes), tuple(draft.events), tuple(draft.mails), frozen(draft.context),
                tuple(draft.away))


def _refusal(sender: str, detail: str, problems: list[str], threaded: bool = True) -> _Draft:
    """Nothing applied; the member is told every problem and given the keyword list."""
    return _Draft(PlanKind.REFUSED, events=[(sender, "refused", detail)],
                  mails=[Reply("command_error", (sender,), internal=True, threaded=threaded)],
                  context={"problems": problems, "keywords": help_table()})


def _kept_in_team(text: str, answers: str | None, requester: str) -> str | None:
    """Why a member's words stay a team note rather than go to the requester, or None when they may go."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][:NOTE_WITHIN_LINES]
    if any(_NOTE_LINE.match(line) for line in lines):
        return "kept as a team note (#note), not sent to the requester"
    if answers in RELAYED_BY_DEFAULT:
        return None
    what = f"the {_TEAM_MAIL.get(answers, answers.replace('_', ' '))} mail" if answers else \
        "no mail that brought the request"
    return (f"kept as a team note, not sent to {requester}: it answers {what}, which is for the team; "
            f"start with #reply to send your words to {requester}")


def _from_team(config: Config, item: ItemView, msg: InboundMessage, text: str, secret_ok: bool,
               now: datetime, answers: str | None = None) -> _Draft:
    """A member's mail: keywords first; the rest goes to the requester when it answers the request or says #reply."""
    problem = authentication_problem(msg, config, secret_ok)
    if problem:
        return _refusal(msg.sender, f"mail not applied and not relayed: {problem}",
                        [f"Nothing in your mail was applied or passed on: {problem}. "
                         "If you did not write it, someone else used your address."])
    before = item.state
    ctx = CommandContext(config, msg.sender, now, item.requester, item.requester_name or "")
    commands = plan_commands(text, before, ctx)
    if commands.problems:
        return _refusal(msg.sender, "; ".join(commands.problems), commands.problems)
    effects = commands.effects
    mails = list(commands.mails)  # merged: at most one per recipient, as the final state calls for
    events = [(msg.sender, "command", f"#{k.name}{' ' + k.argument if k.argument else ''}: {e.change}")
              for k, e in zip(commands.keywords, effects, strict=True)]
    notes = [e.note for e in effects if e.note]
    events += [(msg.sender, "note", note) for note in notes]
    message = "" if notes or any(e.used_body for e in effects) else commands.rest
    explicit = [k for k, e in zip(commands.keywords, effects, strict=True) if e.relay]
    if explicit and not notes:  # #reply's own line belongs to the words for the requester
        message = "\n".join(part for part in (explicit[0].argument, commands.rest) if part)
    copied = bool(item.requester) and item.requester in msg.to + msg.cc
    kept = None if explicit or copied or not item.requester else _kept_in_team(text, answers, item.requester)
    if kept and (message or msg.attachments and not notes):
        if message:
            events.append((msg.sender, "note", message))
        events.append((msg.sender, "kept", kept))
        message, notes = "", [*notes, kept]
        # The member learns where their words went, and how to send them on; not when they answer that
        # very answer (an out-of-office would otherwise be the other half of a loop with inboxd).
        if not effects and answers not in _OUR_ANSWERS:
            mails.append(Reply("command_ok", (msg.sender,), internal=True))
    else:
        kept = None
    if message and copied:  # the requester has this very mail already
        events.append((msg.sender, "answered", f"wrote to {item.requester} directly, with a copy to the team"))
    elif (message or msg.attachments and not notes) and item.requester and not any(m.to_requester for m in mails):
        mails.append(Reply("relay", (item.requester,), to_requester=True, carry_attachments=True))
        events.append((msg.sender, "relayed", f"reply relayed to {item.requester}"))
    mails = with_answer(mails, msg.sender, effects)  # one command_ok (with the table for #help), or help alone
    changes = changes_between(before, commands.state)
    if item.first_response_at is None and (copied and message or any(m.to_requester for m in mails)):
        changes["first_response_at"] = now
        if item.created_at is not None:
            changes["first_response_minutes"] = config.calendar.working_minutes(item.created_at, now)
    if copied and message:  # the requester heard from the owner: the status-update clock starts again
        changes["last_told_at"] = changes["heard_at"] = now
    kind = PlanKind.COMMAND if effects else PlanKind.NOTED if kept else \
        PlanKind.RELAYED if any(m.template == "relay" for m in mails) else PlanKind.RECORDED
    if kind == PlanKind.RECORDED:
        events.append((msg.sender, "reply", "a mail with no new text"))
    said = [e.change for e in effects] + ([kept] if kept else [])
    return _Draft(kind, changes, events, mails, {"message": message, "changes": said, "keywords": help_table()},
                  [e.away for e in effects if e.away])


def member_mail(config: Config, msg: InboundMessage, text: str, now: datetime) -> Plan | None:
    """A new mail from a member that only says `#away until …` or `#back`: about them, not a request."""
    keywords, rest = split_keywords(text)
    if not keywords or rest or not config.team.speaks_for_team(msg.sender) \
            or any(k.name not in MEMBER_KEYWORDS for k in keywords):
        return None
    rules = config.commands
    # A new mail carries no item's reply address: the receiving server's DMARC/DKIM is the proof it can have.
    problem = authentication_problem(msg, config, secret_ok=bool(rules.authserv_id) or not rules.require_secret)
    if problem and not rules.authserv_id:
        problem = ("a new mail cannot carry an item's reply address, so it cannot prove who wrote it: "
                   "send #away or #back in a reply to a mail from inboxd instead")
    blank = ItemState(None, Status.OPEN, "normal", (), None, False, None, None)
    commands = plan_commands(text, blank, CommandContext(config, msg.sender, now, ""))
    problems = [problem] if problem else commands.problems
    if problems:
        draft = _refusal(msg.sender, "; ".join(problems), problems, threaded=True)
    else:
        draft = _Draft(PlanKind.COMMAND, events=[(msg.sender, "command", e.change) for e in commands.effects],
                       mails=[Reply("command_ok", (msg.sender,), internal=True, threaded=True)],
                       context={"changes": [e.change for e in commands.effects], "keywords": help_table()},
                       away=[e.away for e in commands.effects if e.away])
    return Plan(draft.kind, frozen(), tuple(draft.events), tuple(draft.mails), frozen(draft.context),
                tuple(draft.away))


def _from_outside(config: Config, item: ItemView, msg: InboundMessage, text: str, now: datetime) -> _Draft:
    """The requester's (or someone else's) reply: a rating, thanks, a reopen, or news for the owner."""
    who = msg.sender or "unknown sender"
    is_requester = bool(msg.sender) and msg.sender == item.requester
    if not text.strip() and not msg.attachments:
        return _Draft(PlanKind.RECORDED, events=[(who, "reply", f"a reply from {who} with no new text")])
    if not is_requester and (not msg.sender or msg.sender not in item.participants):
        return _stranger(config, item, who, text)
    if item.status not in OPEN_STATUSES:
        rating = _RATING.fullmatch(text)
        if is_requester and rating and _is_comment(rating.group(2) or ""):
            return _rated(config, int(rating.group(1)), who)
        if _is_thanks(text):
            return _Draft(PlanKind.THANKS, events=[(who, "thanks", f"{who} said thanks; the item stays {item.status}")])
        reopen_until = config.calendar.add(item.resolved_at or item.created_at or now, config.service.reopen_window)
        if now > reopen_until:
            return _Draft(PlanKind.NEW_ITEM)
        draft = _forward(config, item, who, text, reopened=True)
        draft.kind = PlanKind.REOPENED
        draft.changes.update(status=_reopened_status(item), resolved_at=None, on_track=False, heard_at=now)
        draft.events.insert(0, (who, "reopened", f"reopened by a reply from {who} after it was {item.status}"))
        return draft
    draft = _forward(config, item, who, text)
    if is_requester and item.status == Status.WAITING and item.waiting_on in (None, "requester"):
        draft.changes.update(status=_reopened_status(item), waiting_on=None)
        draft.events.append((who, "answered", "the requester answered: no longer waiting"))
    return draft


def _stranger(config: Config, item: ItemView, who: str, text: str) -> _Draft:
    """Mail from someone not on the request (anyone can write [IT-42]): a note for the team, nothing more.

    It never reaches the requester, never reopens the item and never counts as the requester's word.
    """
    draft = _forward(config, item, who, text)
    draft.kind = PlanKind.STRANGER
    draft.events[:] = [(who, "stranger", f"mail from {who}, who is not on this request: kept as a note for "
                                         f"{', '.join(draft.mails[0].to)}; the item stays {item.status}")]
    draft.context["stranger"] = True
    return draft


def _reopened_status(item: ItemView) -> Status:
    return Status.OPEN if item.owner else Status.NEW


def _forward(config: Config, item: ItemView, who: str, text: str, reopened: bool = False) -> _Draft:
    """Add the reply to the item and pass it on to whoever works on it."""
    to = (item.owner,) if item.owner else (config.queues.get(item.queue) or (config.team.lead,))
    mail = Reply("requester_reply", tuple(to), internal=True, carry_attachments=True, threaded=False)
    return _Draft(PlanKind.REPLY, {}, [(who, "reply", f"reply from {who} forwarded to {', '.join(to)}")], [mail],
                  {"reopened": reopened, "message": text})


def _rated(config: Config, rating: int, who: str) -> _Draft:
    events: list[EventLine] = [(who, "rated", f"satisfaction {rating} of 5")]
    mails = []
    if rating <= 2:
        mails.append(Reply("low_rating", (config.team.lead,), internal=True, threaded=False, with_history=True))
        events.append(("inboxd", "escalated", f"a rating of {rating} sent to the lead {config.team.lead}"))
    return _Draft(PlanKind.RATING, {"satisfaction": rating}, events, mails, {"rating": rating})


def _is_comment(text: str) -> bool:
    """What may follow a score: a few words on why, not a question or a new request."""
    return len(text.split()) <= 25 and "?" not in text


def _is_short(text: str) -> bool:
    return len(text.split()) <= _SHORT and "?" not in text


def _is_thanks(text: str) -> bool:
    """A reply that only says thank you: no question, a few words, a thanks among them."""
    return bool(_THANKS.search(text)) and _is_short(text) and not _BUT.search(text)
