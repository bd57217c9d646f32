"""Cutting a reply down to what its writer newly wrote: real mail from the corpus, then small synthetic cases."""

from __future__ import annotations

import email
from email.message import Message
from pathlib import Path

import pytest
from helpers import CORPUS

from inboxd.message import decode
from inboxd.replytext import html_quotes_marked, new_text

REPLY = CORPUS / "reply"
JOE = ("Hi Katharine.\xa0 Sounds great.\xa0 Are there and dietry restrictions or things your husband does/doesn't "
       "like to eat?\xa0 Would you like to do a few hors d oeuvres and then a\xa03 or 4\xa0course dinner?\xa0 Let me "
       "know what you think will work best and I will start working on a menu and proposal.\xa0 Thanks so much and "
       "look forward to hearing from you soon.")
SWEDISH = ("This email will not be captured correctly by php-mime-mail-parser.\n\n"
           "Mailparse is unable to handle poorly formed emails. For example ...\n\n"
           "    Det h\ufffdr \ufffdr ett flerdelat meddelande i MIME-format.\n\n"
           "... is directly above this quoted-printable wrapper, thanks to the Swedish email client Microsoft Windows "
           "Live (circa 2009), adding UTF-8 chars where there should only be ascii. At least, that's what I think "
           "the problem is.")
# Corpus file -> the new text of its decoded body, decided by reading each mail.
EXPECTED = {
    "mikel__mime_emails_sig_only_email.eml":
        "This is random text, not what has been signed below, ie, this sig\nemail is not signed correctly.",
    "mikel__plain_emails_raw_email_reply.eml": "Message body",
    # No quote; only its three blank lines shrink to one.
    "notmuch__attachment_x-gtar-compressed.eml":
        "And obviously I forget the frigging attachment.\n\n"
        "PS: don't we have a \"you forgot to actually attach the damn file\" plugin\n"
        "when we detect the word \"attachment\" and there's no attach? :p",
    "notmuch__insert_mbox-attachment.eml":
        "I figured out the race condition in the tests. The previous test was\n"
        "still running when the failing test started, the joys of using a shared\n"
        "emacs for running all of the tests in one file.\n\n"
        "The attached diff is split into the the commits that introduce the tests\n"
        "in question in my working series, but you should be able to just apply\n"
        "it on top of the posted series if you want.",
    "phpmp__m0019.eml": SWEDISH,
    "phpmp__m0022.eml": SWEDISH,
    "talon__reply-quotations-share-block.eml": JOE + "\n\nJoe XXX",
    "talon__standard_replies_android.eml": "Hello",
    "talon__standard_replies_apple_mail.eml": "Hello",
    "talon__standard_replies_comcast.eml": "Hello",
    "talon__standard_replies_gmail.eml": "Hello",
    "talon__standard_replies_iphone.eml": "Hello",
    "talon__standard_replies_outlook.eml": "Hello",
    "talon__standard_replies_thunderbird.eml": "Hello",
    "talon__standard_replies_yahoo.eml": "Hello",
}
# Corpus file -> the new text of its HTML part. Left out: the share-block's HTML closes its <blockquote>
# with a stray </DIV>, so the parser lets the quoted mail's footer escape the quote.
EXPECTED_HTML = {
    "talon__standard_replies_android.eml": "Hello",
    "talon__standard_replies_comcast.eml": "Hello",
    "talon__standard_replies_gmail.eml": "Hello",
    "talon__standard_replies_outlook.eml": "Allo! Follow up MIME!",  # its HTML says other words than its text
}


def _corpus_files() -> list[str]:
    """Names of all files in the reply corpus."""
    return sorted(path.name for path in REPLY.iterdir() if path.is_file())


def _html_part(path: Path) -> str:
    """The decoded text/html part of a corpus mail."""
    for part in email.message_from_bytes(path.read_bytes()).walk():
        if isinstance(part, Message) and part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8", "replace")
    raise AssertionError(f"{path.name} has no HTML part")


def test_expectations_cover_exactly_the_corpus():
    assert set(EXPECTED) == set(_corpus_files())


@pytest.mark.parametrize("name", _corpus_files())
def test_corpus_reply(name: str):
    assert name in EXPECTED, f"add the expected new text of {name} to EXPECTED"
    assert new_text(decode((REPLY / name).read_bytes()).text) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_HTML))
def test_corpus_html_reply(name: str):
    assert new_text(html_quotes_marked(_html_part(REPLY / name))) == EXPECTED_HTML[name]


@pytest.mark.parametrize("quoted", ["> #done", ">> #done", "  > #done", ">#done", "> > #done"])
def test_quoted_done_never_survives(quoted: str):
    for text in (f"{quoted}\nThanks", f"Thanks\n{quoted}", f"Thanks\n\n{quoted}\n\nMore", quoted):
        assert "#done" not in new_text(text)


def test_german_outlook_header_block():
    text = "Erledigt.\n\nVon: Bob Meier <bob@x.org>\nGesendet: Montag, 2. April 2012 14:20\nAn: help@x.org\n" \
           "Betreff: Drucker\n\n#done bitte"
    assert new_text(text) == "Erledigt."


def test_french_outlook_header_block():
    text = "C'est fait.\n\nDe : Bob <bob@x.org>\nEnvoyé : lundi 2 avril 2012 14:20\nÀ : help@x.org\n" \
           "Objet : Imprimante\n\n#done svp"
    assert new_text(text) == "C'est fait."


def test_outlook_underscore_rule():
    text = "Fixed.\n\n________________________________\nFrom: Bob <bob@x.org>\nSent: Monday\n\nold"
    assert new_text(text) == "Fixed."


@pytest.mark.parametrize("separator", ["-----Original Message-----", "----- Original Message -----",
                                       "-------- Forwarded Message --------",
                                       "---------- Forwarded message ---------"])
def test_original_message_separator(separator: str):
    assert new_text(f"Done.\n\n{separator}\nFrom: bob@x.org\n\nold text #done") == "Done."


def test_signature_is_cut():
    assert new_text("Done, thanks.\n\n-- \nBob Meier\nFacilities\n\n> #done") == "Done, thanks."
    assert new_text("Done.\n--\nBob") == "Done."


@pytest.mark.parametrize("footer", ["Sent from my iPhone", "Sent from my Samsung Galaxy smartphone.",
                                    "Get Outlook for Android", "Von meinem iPhone gesendet",
                                    "Envoyé de mon iPhone", "Sent from Yahoo Mail on Android"])
def test_mobile_footer_is_cut(footer: str):
    assert new_text(f"On my way.\n\n{footer}") == "On my way."


def test_interleaved_reply_keeps_every_part():
    text = "On Mon, Apr 2, 2012 at 6:26 PM, Bob <bob@x.org> wrote:\n> Is the printer fixed?\nYes.\n" \
           "> And the lamp?\nTomorrow.\n> Thanks"
    assert new_text(text) == "Yes.\n\nTomorrow."


def test_bottom_posting_keeps_text_after_the_quote():
    assert new_text("On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi #done\nHello") == "Hello"


def test_attribution_wrapped_over_two_lines():
    text = "Done\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <\nmegan@example.org> wrote:\n\n> Hi"
    assert new_text(text) == "Done"
    text = "Done\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <megan@example.org>\nwrote:\n> Hi"
    assert new_text(text) == "Done"


def test_android_date_first_attribution_keeps_the_line_above():
    text = 'Hello\n02.04.2012 14:20 пользователь "bob@x.org" <\nbob@x.org> написал:\n\n> Hi\n>'
    assert new_text(text) == "Hello"


@pytest.mark.parametrize("attribution", ["Am 02.04.2012 um 14:20 schrieb Bob <bob@x.org>:",
                                         "Le 2 avr. 2012 à 14:20, Bob <bob@x.org> a écrit :",
                                         "El 2 abr 2012, a las 14:20, Bob <bob@x.org> escribió:",
                                         "Op 2 apr. 2012 om 14:20 schreef Bob <bob@x.org>:",
                                         "Il giorno 2 apr 2012, alle ore 14:20, Bob <bob@x.org> ha scritto:",
                                         "Den 2 apr. 2012 kl. 14:20 skrev Bob <bob@x.org>:",
                                         "W dniu 2.04.2012 14:20, Bob <bob@x.org> napisał:"])
def test_localised_attribution(attribution: str):
    assert new_text(f"Erledigt\n\n{attribution}\n\n> #done") == "Erledigt"


def test_attribution_followed_by_unquoted_original_cuts_to_the_end():
    text = "Ok\n\n--- On Wed, 4/4/12, bob@x.org <bob@x.org> wrote:\n\nFrom: bob@x.org\nSubject: hi\n\n#done"
    assert new_text(text) == "Ok"


def test_own_from_line_is_kept():
    text = "The parcel came.\nFrom: the courier, I think.\nIt was wet.\n\nAnd heavy."
    assert new_text(text) == text


def test_own_text_is_kept_as_written():
    text = "On Monday I wrote:\nthe lamp is broken.\n  indented\n\n\nSent with the bill."
    assert new_text(text) == text


def test_crlf_and_blank_lines():
    assert new_text("\r\n\r\nHi\r\n\r\n\r\n\r\n\r\nthere\r\n\r\n") == "Hi\n\nthere"


def test_nothing_left():
    assert new_text("") == ""
    assert new_text("On Mon, Apr 2, 2012 at 6:26 PM, Bob <bob@x.org> wrote:\n> #done\n>\n> old") == ""


def test_gmail_html_reply():
    html = ('<div dir="ltr">Thanks, done<br></div><div class="gmail_quote"><div class="gmail_attr">'
            'On Mon, Apr 2, 2012 at 6:26 PM, Bob &lt;<a href="mailto:bob@x.org">bob@x.org</a>&gt; wrote:<br></div>'
            '<blockquote class="gmail_quote">#done old<br>stuff</blockquote></div>')
    marked = html_quotes_marked(html)
    assert "> #done old\n> stuff" in marked
    assert new_text(marked) == "Thanks, done"


def test_outlook_html_reply():
    html = ('<html><head><style>p {color: red}</style></head><body><div>Fixed the <b>printer</b>.</div>'
            '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
            '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>From:</b> Bob &lt;bob@x.org&gt;<br>'
            '<b>Sent:</b> Monday, April 2, 2012 14:20<br><b>To:</b> help@x.org<br><b>Subject:</b> Printer</font>'
            '<div>&nbsp;</div></div><div>#done please<br>it jams</div></body></html>')
    assert new_text(html_quotes_marked(html)) == "Fixed the printer."


def test_outlook_desktop_html_reply_without_markers():
    html = ('<p>Fixed.</p><hr><p><b>From:</b> Bob<br><b>Sent:</b> Monday<br><b>To:</b> help@x.org</p>'
            '<p>#done please</p>')
    assert new_text(html_quotes_marked(html)) == "Fixed."


def test_apple_html_reply():
    html = ('<div>Done<div><br><div>On Apr 3, 2012, at 4:19 PM, bob &lt;<a href="mailto:bob@x.org">bob@x.org</a>'
            '&gt; wrote:</div><br><blockquote type="cite"><div>#done<blockquote type="cite">older</blockquote>'
            '</div></blockquote></div></div>')
    marked = html_quotes_marked(html)
    assert "> #done" in marked and "> older" in marked
    assert new_text(marked) == "Done"


def test_html_without_quotes_is_plain_text():
    html = "<html><head><title>x</title></head><body><p>Printer <b>broken</b></p><p>Floor 3</p><script>x()</script>"
    assert html_quotes_marked(html) == "Printer broken\nFloor 3"  # inline tags stay on their line


def test_an_attribution_without_a_date_counts_directly_above_a_quote():
    # A bare survey answer: before, the undated attribution stayed and the "4" read as news (a reopen).
    assert new_text("4\n\nOn some day, Help wrote:\n> How did we do? Reply with 1 to 5.\n") == "4"
    assert new_text("4\n\nAm Montag schrieb IT Help:\n> Wie war es?\n") == "4"


def test_on_monday_i_wrote_in_running_text_stays():
    assert new_text("See below.\nOn Monday I wrote:\nthe lamp is broken.") == \
        "See below.\nOn Monday I wrote:\nthe lamp is broken."
