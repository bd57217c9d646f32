"""`inboxd rules test`: what would happen to a mail, decided for real, sent nowhere."""

from __future__ import annotations

from datetime import datetime

from . import guards
from .checks import load_rules_and_templates
from .config import Config
from .mailout import compose, item_context, request_context, team_context
from .message import decode
from .models import Item
from .routing import Decline, Queue, Redirect
from .tracker import STRATEGIES


def explain(config: Config, raw: bytes, now: datetime) -> str:
    """A readable report: the mail, the guards, each rule tried, the disposition, the mail sent."""
    rules, renderer = load_rules_and_templates(config)
    msg = decode(raw)
    out = [f"mail:        {msg.message_id}", f"from:        {msg.sender or '(no sender address)'}",
           f"subject:     {msg.subject or '(no subject)'}",
           f"attachments: {', '.join(a.name for a in msg.attachments) or 'none'}", ""]
    skip = guards.check(msg, config.team.address)
    if skip is not None:
        out.append(f"guards:      SKIPPED by {skip}")
        out.append("             stored with this reason; never answered, never an item.")
        return "\n".join(out)
    out.append("guards:      passed (not automatic, not a list, not a bounce, not our own)")
    decision = rules.decide(msg)
    out += ["", f"rules tried ({len(rules.rules)} rule(s) from {len(rules.files)} file(s), first match wins):"]
    for line in decision.trace:
        mark = "MATCH" if line.matched else "no   "
        out.append(f"  {mark} {line.rule}  ({line.where})\n          {line.why}")
    if not decision.rule:
        out.append("  no rule matched: the default queue takes it")
    disposition = decision.disposition
    out += ["", f"disposition: {disposition}"]
    context = {"team": team_context(config.team), "request": request_context(msg), "item": None,
               "reason": getattr(disposition, "reason", ""), "redirect_to": getattr(disposition, "to", "")}
    mails: list[tuple[str, tuple[str, ...]]] = []
    if isinstance(disposition, Queue):
        due = config.calendar.add(now, disposition.due_in or config.service.default_due)
        owner = disposition.assign if disposition.assign not in STRATEGIES else None
        if disposition.assign in STRATEGIES:
            members = config.queues.get(disposition.queue, ())
            out.append(f"owner:       chosen {disposition.assign} among {', '.join(members)} when it runs")
        item = Item(id=None, subject=msg.subject or "(no subject)", requester=msg.sender,
                    requester_name=msg.sender_name, owner=owner, queue=disposition.queue,
                    status="open" if owner else "new", priority=disposition.priority,
                    tags=list(disposition.tags), created_at=now, due_at=due)
        context["item"] = item_context(item, config.team)
        out.append(f"due:         {renderer.when(due)} (if it arrived now)")
        if disposition.ack_template() and msg.sender:
            mails.append((disposition.ack_template(), (msg.sender,)))
        if owner:
            mails.append(("assigned", (owner,)))
    elif isinstance(disposition, Decline) and msg.sender:
        mails.append((disposition.template, (msg.sender,)))
    elif isinstance(disposition, Redirect):
        mails.append(("forwarded", (disposition.to,)))
        if msg.sender:
            mails.append((disposition.template, (msg.sender,)))
    if not mails:
        out += ["", "mail sent:   none"]
    for template, to in mails:
        rendered = renderer.render(template, context)
        mail = compose(template, rendered, config.team, to, now,
                       ref=context["item"]["ref"] if context["item"] else None, reply_to=msg)
        out += ["", f"--- mail that would be sent (template {template}) ---",
                f"To: {', '.join(to)}", f"Subject: {mail.subject}", "", rendered.text.rstrip()]
    return "\n".join(out)
