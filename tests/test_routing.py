"""Rules: operators, combinators, first match, and load-time validation with file:line errors."""

from pathlib import Path

import pytest
from helpers import REPO, make_mail

from inboxd.errors import RulesError
from inboxd.message import decode
from inboxd.routing import Decline, Ignore, Queue, Redirect, load_rules
from inboxd.routing.loader import Known

KNOWN = Known(frozenset({"default", "ops", "facilities"}),
              frozenset({"ana@example.org", "bo@example.org"}),
              frozenset({"ack", "ack_urgent", "assigned", "declined", "redirected", "forwarded"}))


def rules_from(tmp_path: Path, text: str, name: str = "10-test.toml"):
    (tmp_path / name).write_text("version = 1\n" + text)
    return load_rules(tmp_path, KNOWN)


def decide(tmp_path: Path, text: str, **mail):
    return rules_from(tmp_path, text).decide(decode(make_mail(**mail)))


@pytest.mark.parametrize("match, mail, expected", [
    ('match.subject = { is = "printer" }', {"subject": "Printer"}, True),
    ('match.subject = { is = "printer" }', {"subject": "Printer jam"}, False),
    ('match.subject = { contains = ["toner", "jam"] }', {"subject": "Paper JAM"}, True),
    ('match.subject = { matches = "re: *" }', {"subject": "Re: hello"}, True),
    ('match.subject = { regex = "^ticket #\\\\d+" }', {"subject": "Ticket #12"}, True),
    ('match.from = { domain = "board.example.org" }', {"sender": "x@board.example.org"}, True),
    ('match.from = { domain = "example.org" }', {"sender": "x@sub.example.org"}, True),
    ('match.from = { domain = "example.org" }', {"sender": "x@notexample.org"}, False),
    ('match.to = { is = "help@example.org" }', {}, True),
    ('match.cc = { exists = true }', {}, False),
    ('match.body = { contains = "locked out" }', {"body": "I am LOCKED OUT"}, True),
    ('match.header."X-Priority" = { is = ["1", "2"] }', {"headers": {"X-Priority": "1"}}, True),
    ('match.header."X-Priority" = { exists = false }', {}, True),
    ('match.size = { over = "1MB" }', {}, False),
    ('match.size = { under = "1MB" }', {}, True),
])
def test_operators(tmp_path, match, mail, expected):
    decision = decide(tmp_path, f'[[rule]]\nname = "r"\n{match}\nqueue = "ops"\n', **mail)
    assert (decision.rule == "r") is expected


def test_attachment_glob(tmp_path):
    from email.message import EmailMessage
    mail = EmailMessage()
    mail["From"], mail["Subject"] = "a@example.org", "invite"
    mail.set_content("x")
    mail.add_attachment(b"BEGIN:VCALENDAR", maintype="text", subtype="calendar", filename="invite.ics")
    ruleset = rules_from(tmp_path, '[[rule]]\nname = "ics"\nmatch.attachment = { matches = "*.ics" }\nignore = true\n')
    assert isinstance(ruleset.decide(decode(mail.as_bytes())).disposition, Ignore)


def test_any_all_not(tmp_path):
    text = '''[[rule]]
name = "vip"
match.from = { domain = "board.example.org" }
match.any = [ { subject = { contains = "outage" } }, { header."X-Priority" = { is = "1" } } ]
match.not = { subject = { contains = "newsletter" } }
queue = "ops"
priority = "high"
'''
    ruleset = rules_from(tmp_path, text)
    hit = ruleset.decide(decode(make_mail("m@board.example.org", "Outage in room 2")))
    assert hit.rule == "vip" and hit.disposition.priority == "high"
    assert ruleset.decide(decode(make_mail("m@board.example.org", "Outage newsletter"))).rule is None
    assert ruleset.decide(decode(make_mail("m@board.example.org", "hi", headers={"X-Priority": "1"}))).rule == "vip"
    assert ruleset.decide(decode(make_mail("m@other.org", "Outage"))).rule is None


def test_first_match_wins_across_files_and_default_queue(tmp_path):
    (tmp_path / "20-b.toml").write_text('[[rule]]\nname = "b"\nmatch.subject = { contains = "x" }\nqueue = "ops"\n')
    (tmp_path / "10-a.toml").write_text('[[rule]]\nname = "a"\nmatch.subject = { contains = "x" }\nqueue = "facilities"\n')
    ruleset = load_rules(tmp_path, KNOWN)
    decision = ruleset.decide(decode(make_mail(subject="x")))
    assert decision.rule == "a" and decision.disposition.queue == "facilities"
    assert [t.rule for t in decision.trace] == ["a"]
    fallback = ruleset.decide(decode(make_mail(subject="nothing")))
    assert fallback.rule is None and fallback.disposition == Queue("default")
    assert [(t.rule, t.matched) for t in fallback.trace] == [("a", False), ("b", False)]
    assert "subject contains 'x': no" in fallback.trace[0].why


def test_dispositions(tmp_path):
    text = '''[[rule]]
name = "pay"
match.subject = { contains = "payroll" }
redirect = { to = "payroll@example.org" }
[[rule]]
name = "byod"
match.body = { contains = "my own laptop" }
decline = { reason = "Company devices only." }
[[rule]]
name = "rr"
match.subject = { contains = "printer" }
queue = "facilities"
assign = "round-robin"
due_in = "4 business hours"
tags = ["printer"]
acknowledge = false
'''
    ruleset = rules_from(tmp_path, text)
    assert ruleset.decide(decode(make_mail(subject="payroll"))).disposition == Redirect("payroll@example.org")
    assert ruleset.decide(decode(make_mail(body="fix my own laptop"))).disposition == Decline("Company devices only.")
    queue = ruleset.decide(decode(make_mail(subject="printer"))).disposition
    assert (queue.assign, str(queue.due_in), queue.tags, queue.ack_template()) == \
        ("round-robin", "4 business hours", ("printer",), None)


def test_four_kinds_of_mistake_reported_at_once_with_file_and_line(tmp_path):
    (tmp_path / "10-a.toml").write_text('''version = 1

[[rule]]
name = "printer"
match.subject = { contains = "printer" }
queue = "facilities"
asign = "round-robin"

[[rule]]
name = "bad-regex"
match.subject = { regex = "([unclosed" }
queue = "ops"
''')
    (tmp_path / "20-b.toml").write_text('''version = 1
[[rule]]
name = "nope"
match.body = { contains = "my own laptop" }
decline = { template = "declined_nicely", reason = "no" }

[[rule]]
name = "printer"
match.subject = { contains = "toner" }
queue = "facilities"
''')
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path, KNOWN)
    problems = caught.value.problems
    a, b = tmp_path / "10-a.toml", tmp_path / "20-b.toml"
    assert f"{a}:7: printer: asign: unknown key (did you mean 'assign'?)" in problems
    assert any(p.startswith(f"{a}:11: bad-regex: match.subject.regex: bad regular expression") for p in problems)
    assert f"{b}:5: nope: decline.template: unknown template 'declined_nicely' (did you mean 'declined'?)" in problems
    assert any(p.startswith(f"{b}:8: printer: name: duplicate rule name 'printer', first defined at {a}:3")
               for p in problems)
    assert len(problems) == 4


@pytest.mark.parametrize("body, fragment", [
    ('match.subject = { contains = "x" }\nqueue = "sales"', "unknown queue 'sales'"),
    ('match.subject = { contains = "x" }\nqueue = "ops"\nignore = true', "needs exactly one of"),
    ('match.subject = { contain = "x" }\nqueue = "ops"', "unknown operator (did you mean 'contains'?)"),
    ('match.subjet = { contains = "x" }\nqueue = "ops"', "unknown field 'subjet' (did you mean 'subject'?)"),
    ('match.subject = { contains = "x" }\nqueue = "ops"\npriority = "hgh"', "must be one of low, normal, high, urgent"),
    ('match.subject = { contains = "x" }\nqueue = "ops"\nassign = "zed@example.org"', "neither round-robin"),
    ('match.subject = { contains = "x" }\nqueue = "ops"\ndue_in = "soonish"', "not a duration"),
    ('match.subject = { contains = "x" }\nignore = true\ntags = ["a"]', "only applies to rules with queue"),
    ('match.subject = { contains = "x" }\nqueue = "ops"\nhonour_requested_date = "yes"', "must be true or false"),
    ('match.subject = { contains = "x" }\nqueue = "ops"\nhonor_requested_date = true',
     "(did you mean 'honour_requested_date'?)"),
    ('queue = "ops"', "match: missing"),
])
def test_single_mistakes(tmp_path, body, fragment):
    with pytest.raises(RulesError) as caught:
        rules_from(tmp_path, f'[[rule]]\nname = "r"\n{body}\n')
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


def test_shipped_rules_validate():
    ruleset = load_rules(REPO / "rules", KNOWN)
    assert len(ruleset.rules) >= 5
    kinds = {type(r.disposition) for r in ruleset.rules}
    assert kinds == {Queue, Ignore, Redirect, Decline}
