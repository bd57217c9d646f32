"""`inboxd rules test`: what would happen to a mail, decided by the same code as a real run, sent nowhere."""

from __future__ import annotations

from datetime import datetime

from . import guards, intake
from .checks import load_rules_and_templates
from .config import Config
from .conversation import reply_text
from .domain import ItemView, Reply
from .mailout import Composer
from .message import decode
from .routing import Queue
from .threads import tagged_ids


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
    tags = tagged_ids(msg.subject, config.team.ref_prefix)
    if tags or msg.in_reply_to or msg.references:
        why = f"its subject names {config.team.ref(tags[0])}" if tags else "it answers another mail"
        out += [f"thread:      {why}: if that is an item of ours, this is a reply to it, read as a "
                "conversation (keywords, relay), and the rules below do not apply",
                f"new text:    {reply_text(msg)[:300] or '(none)'}"]
    decision = rules.decide(msg)
    out += ["", f"rules tried ({len(rules.rules)} rule(s) from {len(rules.files)} file(s), first match wins):"]
    for line in decision.trace:
        mark = "MATCH" if line.matched else "no   "
        out.append(f"  {mark} {line.rule}  ({line.where})\n          {line.why}")
    if not decision.rule:
        out.append("  no rule matched: the default queue takes it")
    disposition = decision.disposition
    out += ["", f"disposition: {disposition}"]
    item: ItemView | None = None
    replies: list[Reply] | tuple[Reply, ...]
    if isinstance(disposition, Queue):
        owner = None
        if disposition.assign in intake.STRATEGIES:
            members = config.queues.get(disposition.queue, ())
            out.append(f"owner:       chosen {disposition.assign} among {', '.join(members)} when it runs")
        else:
            owner = disposition.assign
        new = intake.plan_new_item(config, msg, decision, owner, (), now, sets=renderer.languages)
        item, replies = new.item, new.replies
        out.append(f"due:         {renderer.when(item.due_at)} (if it arrived now)")
    else:
        replies = intake.replies_for(disposition, msg.sender)
    language = intake.language_of(config, msg, disposition, renderer.languages)
    if replies:
        out.append(f"language:    {language} (mail to the requester; the team's is {config.team.language})")
    else:
        out += ["", "mail sent:   none"]
    composer = Composer(config, renderer)
    context = composer.context(item, msg, disposition=disposition, language=language)
    for mail in composer.compose(replies, context, item, now, msg):
        out += ["", f"--- mail that would be sent (template {mail.kind}) ---",
                f"To: {', '.join(mail.to)}", f"Subject: {mail.subject}", "", mail.text.rstrip()]
    return "\n".join(out)
