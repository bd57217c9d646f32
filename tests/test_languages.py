"""Templates in the requester's language: which set, dates in that language, `check` of every set."""

import email
import logging
import shutil
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from conversation_helpers import text_of
from helpers import REPO, make_mail, write_config

from inboxd import languages
from inboxd.checks import missing_translations, sample_contexts
from inboxd.cli import cli
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import ConfigError, RulesError
from inboxd.models import Event, Item
from inboxd.outbox import FakeTransport
from inboxd.render import Renderer
from inboxd.routing import load_rules
from inboxd.routing.loader import Known
from inboxd.source import FakeSource

BERLIN = ZoneInfo("Europe/Berlin")
FRIDAY = datetime(2026, 12, 4, 16, 30, tzinfo=timezone.utc)  # 17:30 in Berlin
SETS = ("en", "de", "pt-BR")


# --- which language ------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, header, expected", [
    ("de", "pt-BR", "de"),  # the rule first
    (None, "pt-BR", "pt-BR"),  # else the mail's Content-Language
    (None, None, "en"),  # else the team's
    (None, "de-CH", "de"),  # a region with no set of its own: its language
    (None, "pt", "en"),  # a language with only a regional set is not that region
    (None, "xx, fr, DE-at", "de"),  # tags with no set are passed over; case does not matter
    (None, "pt-br", "pt-BR"),  # the set's own spelling
    (None, "de_AT", "de"),  # a locale name where a tag belongs
    (None, "", "en"),
])
def test_the_rule_then_content_language_then_the_team(rule, header, expected):
    assert languages.choose(rule, header, SETS, "en") == expected


def test_known_tags_are_the_ones_babel_knows():
    assert all(languages.known(tag) for tag in ("de", "de-CH", "pt-BR", "EN"))
    assert not any(languages.known(tag) for tag in ("german", "xx", "zz-ZZ", "", "de_DE/x"))


# --- dates in that language ------------------------------------------------------------------------

def test_dates_in_german_and_english_as_they_always_were():
    assert languages.when(FRIDAY, BERLIN, "de") == "Freitag, 4. Dezember 2026, 17:30"
    assert languages.day(FRIDAY, BERLIN, "de") == "Freitag, 4. Dezember"
    assert languages.when(FRIDAY, BERLIN, "fr") == "vendredi 4 décembre 2026, 17:30"
    assert languages.when(FRIDAY, BERLIN, "en") == "Friday 4 December 2026, 17:30"  # byte for byte as before Babel
    assert languages.day(FRIDAY, BERLIN, "en") == "Friday 4 December"
    assert (languages.when(None, BERLIN, "de"), languages.day(None, BERLIN, "en")) == ("nicht festgelegt", "not set")


def test_the_german_set_renders_german_dates_and_falls_back_for_what_it_lacks(config, caplog):
    renderer = Renderer(REPO / "templates", BERLIN)
    assert renderer.languages == {"en", "de"}
    context = sample_contexts(config)["*"][0]
    german = renderer.render("ack", context, "de")
    assert german.subject == "[IT-42] Ihre Anfrage ist bei uns eingegangen: The printer on floor 3 is jammed"
    assert "Wir erledigen sie bis Donnerstag, 26. November 2026, 10:30." in german.text
    english = renderer.render("ack", context)
    assert "We will have it done by Thursday 26 November 2026, 10:30." in english.text
    with caplog.at_level(logging.WARNING, logger="inboxd.render"):
        fallback = renderer.render("assigned", context, "de")  # team mail: the German set has none
        renderer.render("assigned", context, "de")
    assert fallback == renderer.render("assigned", context)  # the default set's, with English dates
    assert [r.getMessage() for r in caplog.records] == [  # once per file
        f"{REPO / 'templates' / 'de' / 'assigned.txt'}: missing in the set: the default set's assigned.txt is used "
        "instead"]


# --- validation: config, rules, check --------------------------------------------------------------

def test_team_language_defaults_to_english_and_must_be_a_tag(tmp_path):
    assert load_config(write_config(tmp_path)).team.language == "en"
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('ref_prefix = "IT"', 'ref_prefix = "IT"\nlanguage = "german"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}:5: [team] language: not a language tag Babel knows: 'german' "
                                     '(like "en", "de" or "pt-BR")']


def test_a_rule_language_needs_a_known_tag_with_a_set(tmp_path):
    known = Known(frozenset({"default"}), frozenset(), frozenset({"ack", "declined"}), frozenset({"en", "de"}))
    (tmp_path / "10-lang.toml").write_text(
        'version = 1\n\n[[rule]]\nname = "swiss"\nmatch.from = { domain = "example.ch" }\nqueue = "default"\n'
        'language = "DE"\n\n'
        '[[rule]]\nname = "french"\nmatch.from = { domain = "example.fr" }\nqueue = "default"\nlanguage = "fr"\n\n'
        '[[rule]]\nname = "klingon"\nmatch.from = { domain = "example.q" }\ndecline = { reason = "no" }\n'
        'language = "tlh-x"\n\n'
        '[[rule]]\nname = "quiet"\nmatch.from = { domain = "example.org" }\nignore = true\nlanguage = "de"\n')
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path, known)
    path = tmp_path / "10-lang.toml"
    assert caught.value.problems == [
        f"{path}:13: french: language: no template set for 'fr': add a templates/fr/ folder (sets: de, en)",
        f"{path}:19: klingon: language: not a language tag Babel knows: 'tlh-x' (like \"de\", \"fr\" or \"pt-BR\")",
        f"{path}:25: quiet: language: only applies to rules that answer: queue, redirect, decline"]
    path.write_text(path.read_text().split("[[rule]]\nname = \"french\"")[0])
    (rule,) = load_rules(tmp_path, known).rules
    assert rule.disposition.language == "de"  # the set's spelling


@pytest.fixture
def site(tmp_path):
    """A config with its own copy of the shipped templates, German set included."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    return write_config(tmp_path, templates=tmp_path / "templates")


def check(config_path):
    return CliRunner().invoke(cli, ["--config", str(config_path), "check"],
                              env={"INBOXD_IMAP_PASSWORD": "x", "INBOXD_SMTP_PASSWORD": "x"})


def test_check_names_each_file_a_language_set_lacks_and_passes(site):
    (site.parent / "templates" / "de" / "resolved.txt").unlink()
    result = check(site)
    assert result.exit_code == 0, result.output
    missing = site.parent / "templates" / "de" / "resolved.txt"
    assert f"WARNING: {missing}: missing in the 'de' set (the default set has it): requesters answered in 'de' " \
           "get the default set's\n" in result.output
    assert result.output.count("WARNING") == 1  # team mail is the team's language: no set is expected to have it
    assert "23 template(s) under" in result.output and ", 8 in de/" in result.output


def test_check_names_the_templates_a_rule_sends_requesters_too(tmp_path):
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "templates" / "ack_vip.txt").write_text("Subject: Welcome\n\nWe are on it.\n")
    (tmp_path / "10-vip.toml").write_text('version = 1\n\n[[rule]]\nname = "vip"\nmatch.from = { domain = "x.org" }\n'
                                          'queue = "default"\nacknowledge = "ack_vip"\n')
    renderer = Renderer(tmp_path / "templates", BERLIN)
    rules = load_rules(tmp_path, Known(frozenset({"default"}), frozenset(), renderer.names(), renderer.languages))
    assert missing_translations(rules, renderer) == [
        f"{tmp_path / 'templates' / 'de' / 'ack_vip.txt'}: missing in the 'de' set (the default set has it): "
        "requesters answered in 'de' get the default set's"]


def test_check_renders_every_set_and_refuses_a_folder_that_is_no_language(site):
    templates = site.parent / "templates"
    (templates / "de" / "status_update.txt").write_text("Subject: Stand\n\n{{ item.stand }}\n")
    (templates / "deutsch").mkdir()
    (templates / "deutsch" / "ack.txt").write_text("Subject: x\n")
    result = check(site)
    assert result.exit_code == 1
    assert f"{templates / 'de' / 'status_update.txt'}:3: 'dict object' has no attribute 'stand'" in result.output
    assert f"{templates / 'deutsch'}/: not a language tag Babel knows (like de, fr or pt-BR): never read" \
        in result.output


# --- the pipeline: the item keeps its language ------------------------------------------------------

def subject(mail) -> str:
    return str(make_header(decode_header(mail["Subject"])))


def speaking(language: str, mail: bytes) -> bytes:
    """The mail with a Content-Language header (make_mail's set_content would drop one given to it)."""
    return f"Content-Language: {language}\r\n".encode() + mail


def run(daemon, *mails):
    daemon.source.add(mails)
    daemon.ingest(daemon.source.open())
    daemon.sender.drain()
    sent = [email.message_from_bytes(raw) for _, _, raw in daemon.sender.transport.sent]
    daemon.sender.transport.sent.clear()
    return sent


def test_content_language_picks_the_set_for_the_requester_and_the_team_keeps_its_own(fake_daemon):
    ack, *announce = run(fake_daemon, speaking("de-CH", make_mail("Rosa Lind <rosa@example.org>",
                                                                  "Bildschirm flackert")))
    assert Item.get().language == "de"
    assert Event.get(Event.kind == "language").detail == "the requester is answered in de (Content-Language: de-CH)"
    assert subject(ack) == "[IT-1] Ihre Anfrage ist bei uns eingegangen: Bildschirm flackert"
    assert "Wir erledigen sie bis Donnerstag, 26. November 2026, 10:00." in text_of(ack)
    assert {subject(a) for a in announce} == {"[IT-1] New request: Bildschirm flackert"}
    assert "Due:     Thursday 26 November 2026, 10:00" in text_of(announce[0])
    (declined,) = run(fake_daemon, speaking("de", make_mail("ken@example.org", "Laptop", "My own laptop is slow.")))
    assert "Diese Anfrage können wir leider nicht" in text_of(declined)  # no item: the mail's language still
    english, *_ = run(fake_daemon, speaking("fr", make_mail("ines@example.org", "Mouse broken")))
    assert Item.get_by_id(2).language == "en" and "We will have it done by" in text_of(english)
    assert not Event.select().where(Event.item == 2, Event.kind == "language").exists()  # the team's: nothing to say


def test_a_rule_language_outranks_content_language(tmp_path, clock):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-swiss.toml").write_text('version = 1\n\n[[rule]]\nname = "zurich"\n'
                                         'match.from = { domain = "example.ch" }\nqueue = "default"\nlanguage = "de"\n')
    daemon = Daemon(load_config(write_config(tmp_path, rules=rules)), clock=clock, source=FakeSource(),
                    transport=FakeTransport())
    ack, *_ = run(daemon, speaking("en", make_mail("urs@example.ch", "Drucker")))
    assert Item.get().language == "de" and subject(ack).startswith("[IT-1] Ihre Anfrage")
    assert Event.get(Event.kind == "language").detail == "the requester is answered in de (the rule's language)"


def test_rules_test_says_the_language_and_shows_the_mail_in_it(config):
    from inboxd.dryrun import explain
    report = explain(config, speaking("de-AT", make_mail("rosa@example.org", "Bildschirm flackert")), FRIDAY)
    assert "language:    de (mail to the requester; the team's is en)" in report
    assert "Subject: [IT-NEW] Ihre Anfrage ist bei uns eingegangen: Bildschirm flackert" in report
    assert "Subject: [IT-NEW] New request: Bildschirm flackert" in report

# --- end to end, on Dovecot --------------------------------------------------------------------------

def test_on_dovecot_a_german_request_hears_german_to_its_end_and_the_team_english(tmp_path, mailbox, smtp_capture):
    from conversation_helpers import reply
    from test_security import OWNER, REQUESTER, Mailroom
    room = Mailroom(tmp_path, mailbox, smtp_capture)
    ack, announce, _ = room.run(speaking("de", make_mail(f"Rosa Lind <{REQUESTER}>", "Bildschirm flackert",
                                                         "Mein Bildschirm flackert.")))
    assert ack["To"] == REQUESTER and subject(ack) == "[IT-1] Ihre Anfrage ist bei uns eingegangen: Bildschirm flackert"
    assert "Wir erledigen sie bis Donnerstag, 26. November 2026, 10:00." in text_of(ack)
    assert subject(announce) == "[IT-1] New request: Bildschirm flackert"  # the team's language
    (applied,) = room.run(reply(room.last(OWNER), OWNER, "#take"))
    assert applied["To"] == OWNER and subject(applied) == "[IT-1] Applied: Bildschirm flackert"
    room.clock.advance(timedelta(days=2, hours=23, minutes=30))  # Thursday 09:30: half an hour to the date
    notice, reminder = sorted(room.run(), key=lambda m: m["To"] != REQUESTER)
    assert notice["To"] == REQUESTER and subject(notice) == "[IT-1] Zum Termin für Bildschirm flackert"
    assert "Donnerstag, 26. November 2026, 10:00 zugesagt haben." in text_of(notice)
    assert "Aktueller Stand: bei Ana." in text_of(notice)
    assert reminder["To"] == OWNER and "Thursday 26 November 2026, 10:00" in text_of(reminder)
    (changed, applied) = room.run(reply(room.last(OWNER), OWNER, "#eta friday\nThe spare part comes on Friday."))
    assert changed["To"] == REQUESTER and subject(changed) == "[IT-1] Neuer Termin für Bildschirm flackert"
    assert "Der neue Termin ist Freitag, 27. November 2026, 17:30." in text_of(changed)
    assert applied["To"] == OWNER and "due Friday 27 November 2026, 17:30" in text_of(applied)
    assert room.item.language == "de"

