"""Loading and checking the admin's files: config, rules and templates, all problems at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .commands import help_table
from .config import Config
from .domain import ItemView, Status
from .errors import ProblemList, RulesError, TemplateError
from .mailout import item_context, mail_context, request_context
from .message import Attachment, InboundMessage
from .render import REQUESTER_TEMPLATES, Renderer
from .routing import Decline, Redirect, RuleSet, load_rules
from .routing.loader import Known


def load_rules_and_templates(config: Config, renderer: Renderer | None = None) -> tuple[RuleSet, Renderer]:
    """The validated rules and a renderer for the templates; raises with every problem found."""
    renderer = renderer or Renderer(config.templates_dir, config.calendar.tz, config.team.language)
    known = Known(frozenset(config.queues), frozenset(m.email for m in config.team.members),
                  renderer.names(), renderer.languages)
    return load_rules(config.rules_dir, known), renderer


def check_everything(config: Config) -> tuple[RuleSet, Renderer]:
    """Load rules and templates and render every template against a sample; raise on any problem."""
    try:
        renderer = Renderer(config.templates_dir, config.calendar.tz, config.team.language)
    except TemplateError as exc:
        raise ProblemList(exc.problems) from None
    problems = renderer.check(sample_contexts(config))
    rules = RuleSet()
    try:
        rules, _ = load_rules_and_templates(config, renderer)
    except RulesError as exc:
        problems += exc.problems
    if problems:
        raise ProblemList(problems)
    return rules, renderer


def missing_translations(rules: RuleSet, renderer: Renderer) -> list[str]:
    """Each template mail to a requester may use that a language set lacks (the default set's goes instead)."""
    named = {getattr(rule.disposition, "template", None) or getattr(rule.disposition, "acknowledge", None)
             for rule in rules.rules}
    return renderer.missing([*REQUESTER_TEMPLATES, *(n for n in named if n and n != "auto")])


def check_secrets(config: Config) -> None:
    """What config loading cannot see: an OAuth2 refresh token that `inboxd auth login` has not stored yet."""
    from .oauth2 import TokenError, read_refresh_token
    problems = []
    shared = config.smtp.oauth2 is config.mailbox.oauth2
    for section, oauth2 in (("mailbox", config.mailbox.oauth2), ("smtp", None if shared else config.smtp.oauth2)):
        if oauth2 is not None and oauth2.grant == "refresh_token":
            try:
                read_refresh_token(oauth2)
            except TokenError as exc:
                problems.append(f"{config.path}: [{section}.oauth2] refresh_token_file: {exc}")
    if problems:
        raise ProblemList(problems)


def security_warnings(config: Config) -> list[str]:
    """What the admin turned off that keeps outsiders from acting as the team, in words to act on."""
    rules = config.commands
    if rules.require_secret or rules.authserv_id:
        return []
    return [f"{config.path}: [commands] require_secret = false and no authserv_id: anyone who can send mail to "
            f"{config.team.address} can write From: a member and steer items (#done, #redirect) or speak to "
            "requesters as the team. Turn require_secret back on, or set authserv_id to your receiving "
            "server's Authentication-Results id."]


def sample_message() -> InboundMessage:
    """A made-up request, for rendering templates without real mail."""
    return InboundMessage(
        message_id="<sample@example.org>", sender="sam.sample@example.org", sender_name="Sam Sample",
        to=("help@example.org",), cc=(), subject="The printer on floor 3 is jammed",
        text="Hello,\n\nthe printer on floor 3 shows a paper jam and won't print.\n\nThanks, Sam",
        attachments=(Attachment("photo.jpg", 48213, "image/jpeg"),), headers={},
        in_reply_to=None, references=(), content_type="text/plain", raw_size=1024)


def sample_item(config: Config, now: datetime) -> ItemView:
    """A made-up item (not saved), for rendering templates."""
    owner = config.team.members[0].email if config.team.members else None
    return ItemView(id=42, subject="The printer on floor 3 is jammed", requester="sam.sample@example.org",
                    requester_name="Sam Sample", owner=owner, queue="default", status=Status.OPEN,
                    tags=("printer",), created_at=now, due_at=now + timedelta(days=3))


def sample_contexts(config: Config) -> dict[str, list[dict[str, Any]]]:
    """Template contexts for `check`: the shapes each template is rendered in, by name or `*`."""
    now = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    msg, item = sample_message(), sample_item(config, now)
    owner = config.team.members[0].email if config.team.members else config.team.lead
    conversation = {
        "message": "I have ordered a new fuser; it arrives on Thursday.", "summary": "Replaced the fuser.",
        "changes": [f"assigned to {owner}", "promised date: Fri 27 Nov 2026 17:30"],
        "problems": ["line 1: unknown keyword #dne (did you mean #done?)"], "keywords": help_table(),
        "old_due_at": now + timedelta(days=1), "rating": 2, "reason": "the vendor ships the part a day late",
        "reopened": False, "now": now, "requester_told": True,
        "absence": [f"{owner} answered with an out-of-office reply on Mon 23 Nov 10:02: 'Out of office until 30 Nov'"],
        "history": [{"at": now, "actor": msg.sender, "kind": "created", "detail": "from sam.sample@example.org"}]}
    from_owner = mail_context(config.team, item, replace(msg, sender=owner), request=request_context(msg))
    everything = mail_context(config.team, item, msg) | conversation
    contexts: dict[str, list[dict[str, Any]]] = {"*": [everything, from_owner | conversation]}
    for name, disposition in (("declined", Decline("We support company devices only.")),
                              ("redirected", Redirect("payroll@example.org")),
                              ("forwarded", Redirect("payroll@example.org"))):
        by_rule = mail_context(config.team, None, msg, disposition)
        by_owner = from_owner | conversation | {"reason": by_rule["reason"], "redirect_to": by_rule["redirect_to"]}
        contexts[name] = [by_rule, by_owner]
    member_mail = mail_context(config.team, None, replace(msg, sender=owner, subject="away")) | conversation
    for name in ("command_ok", "command_error"):  # also answers #away and #back, which are about no item
        contexts[name] = [everything, from_owner | conversation, member_mail | {"message": ""}]
    contexts["command_ok"].append(from_owner | conversation | {"with_keywords": True})  # #help with others
    contexts["requester_reply"] = [*contexts["*"], everything | conversation | {"stranger": True}]  # not on it
    asked = dict(item_context(item, config.team), requested_due_at=item.due_at)
    too_soon = dict(asked, requested_due_at=now + timedelta(days=1))
    contexts["ack"] = [everything, from_owner | conversation, everything | {"item": asked},
                       everything | {"item": too_soon}]
    late = dict(item_context(item, config.team), due_at=now - timedelta(days=1))
    overdue = everything | {"item": late}
    for name in ("owner_reminder", "deadline_notice", "escalation", "status_update"):
        contexts[name] = [everything, overdue, everything | {"absence": [], "requester_told": False}]
    nobody = mail_context(config.team, None, None, request=everything["request"]) | {"now": now}
    quiet_week = {"late_count": 0, "late": [], "at_risk_count": 0, "at_risk": []}
    contexts["digest"] = [nobody | {"digest": sample_digest(now, item, None)},
                          nobody | {"digest": sample_digest(now, item, owner)},
                          nobody | {"digest": sample_digest(now, item, owner) | quiet_week}]
    contexts["mail_held"] = [everything | {"held": {"why": "not sent: this item already sent 30 mails within 1 hour",
                                                    "mails": f"relay to {owner}"}}]
    waiting = {"ref": "IT-42", "subject": item.subject, "requester": msg.sender, "owner": None, "due_at": now}
    contexts["held_requests"] = [nobody | {"queue": item.queue, "held": [waiting, waiting | {"owner": owner}]}]
    return contexts


def sample_digest(now: datetime, item: ItemView, owner: str | None) -> dict[str, Any]:
    """Made-up figures in the shape `digest.digest` returns, for the team (owner None) or one owner."""
    line = {"ref": "IT-42", "subject": item.subject, "due_at": now, "owner_name": "Ana", "status": "open"}
    return {"owner": owner or "", "owner_name": "Ana" if owner else "", "week_from": now - timedelta(days=7),
            "week_to": now, "new": 12, "done": 9, "on_time": 8, "on_time_rate": 89, "ratings": 4,
            "satisfaction": 4.5, "open": 7, "late_count": 30, "late": [line], "at_risk_count": 1,
            "at_risk": [line], "dead_mail": 0 if owner else 2, "needs_attention": 0 if owner else 1,
            "picture": sample_picture()}


def sample_picture() -> dict[str, Any]:
    """Made-up figures and chart rows in the shape `digest.picture` returns."""
    from .report import HEADLINE
    weeks = [("W46", 10.0), ("W47", None), ("W48", 87.5)]
    return {"figures": {"late_without_notice": 1}, "shown": dict.fromkeys(HEADLINE, "87.5 %"),
            "charts": dict.fromkeys(("requests", "on_time", "told_before", "first_response", "satisfaction",
                                     "open_by_age"), weeks)}
