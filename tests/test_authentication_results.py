"""`[commands] authserv_id`: only the topmost Authentication-Results of our server counts; unreadable means no."""

from __future__ import annotations

import pytest
from helpers import write_config

from inboxd.config import Config, load_config
from inboxd.conversation import authentication_problem
from inboxd.message import decode

OURS = "mx.example.org"
# A well-formed pass for the member's domain under our authserv-id, as a sender can write it into
# their own mail: it sits below whatever our server adds on top.
FORGED_PASS = f"{OURS}; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
# Our server's header, made unreadable by what the sender controls (HELO, MAIL FROM).
UNREADABLE = {
    "a HELO address literal": f"{OURS}; iprev=pass policy.iprev=192.0.2.7 smtp.helo=[192.0.2.7]; "
                              f"spf=none smtp.mailfrom=evil.test; dmarc=fail header.from=example.org",
    "a ';' in MAIL FROM": f"{OURS}; spf=fail smtp.mailfrom=x;y@evil.test; dmarc=fail header.from=example.org",
    "non-ASCII in MAIL FROM": f"{OURS}; spf=fail smtp.mailfrom=jö@evil.test; dmarc=fail header.from=example.org",
    "non-ASCII in HELO": f"{OURS}; spf=none smtp.helo=mäil.evil.test; dmarc=fail header.from=example.org",
}


@pytest.fixture
def config(tmp_path) -> Config:
    return load_config(write_config(tmp_path, extra=f'[commands]\nauthserv_id = "{OURS}"\n'))


def member_mail(*results: str) -> bytes:
    """A mail from a member with these Authentication-Results, topmost first, as raw UTF-8."""
    lines = [f"Authentication-Results: {value}" for value in results]
    lines += ["From: Bo <bo@example.org>", "To: help@example.org", "Subject: Re: [IT-1] x", "Message-ID: <c@x>"]
    return ("\r\n".join(lines) + "\r\n\r\n#done\r\n").encode()


def trusted(config: Config, *results: str) -> bool:
    return authentication_problem(decode(member_mail(*results)), config, secret_ok=True) is None


@pytest.mark.parametrize("shape", sorted(UNREADABLE))
def test_an_unreadable_header_of_ours_fails_closed_despite_a_forged_pass_below(config, shape):
    assert not trusted(config, UNREADABLE[shape], FORGED_PASS)
    assert not trusted(config, UNREADABLE[shape])


def test_an_unreadable_header_of_ours_is_recognised_by_its_first_word(config):
    assert not trusted(config, f"  (our MTA) {OURS.upper()} ;spf=pass smtp.helo=[192.0.2.7]", FORGED_PASS)
    assert not trusted(config, f"{OURS} 1; this is not valid at all", FORGED_PASS)


def test_encoded_words_from_mail_from_are_not_decoded_into_results(config):
    # Decoding RFC 2047 in this header turned the MAIL FROM into a result: "dmarc=pass header.from=example.org".
    injected = (f"{OURS}; spf=pass smtp.mailfrom==?utf-8?q?x=3B_dmarc=3Dpass_header.from=3Dexample.org=3B_x=3Dy_"
                f"smtp.x=3D?=@evil.test; dmarc=fail header.from=example.org")
    assert not trusted(config, injected)
    assert "=?utf-8?q?x=3B" in decode(member_mail(injected)).header("authentication-results")


def test_dmarc_failing_for_the_domain_outweighs_a_pass_beside_it(config):
    # A MAIL FROM copied without its quotes can add a well-formed "pass" before the real verdict.
    assert not trusted(config, f"{OURS}; spf=pass smtp.mailfrom=x; dmarc=pass header.from=example.org; x=y "
                               f"smtp.x=@evil.test; dmarc=fail header.from=example.org")
    assert not trusted(config, f"{OURS}; dkim=pass header.d=example.org; dmarc=fail header.from=example.org")
    assert trusted(config, f"{OURS}; dkim=pass header.d=example.org; dmarc=none header.from=example.org")


def test_rfc_8601_order_topmost_of_ours_decides(config):
    assert trusted(config, FORGED_PASS.replace("dkim=pass header.d=example.org; ", ""),
                   f"{OURS}; dmarc=fail header.from=example.org")
    assert not trusted(config, f"{OURS}; dmarc=fail header.from=example.org", FORGED_PASS)
    assert not trusted(config, f"{OURS}; spf=pass smtp.mailfrom=example.org", FORGED_PASS)  # no verdict: no


def test_headers_of_other_servers_are_skipped_not_trusted(config):
    elsewhere = "evil.example.net; dmarc=pass header.from=example.org"
    assert not trusted(config, elsewhere)
    assert not trusted(config, f"{OURS}.evil.test; dmarc=pass header.from=example.org")
    assert trusted(config, elsewhere, f"{OURS} 1; dmarc=pass header.from=example.org")
    assert not trusted(config, elsewhere, f"{OURS}; dmarc=fail header.from=example.org", FORGED_PASS)


def test_dkim_passes_for_the_domain_or_a_parent_but_not_another(config):
    assert trusted(config, f"{OURS}; dkim=pass header.d=example.org")
    assert trusted(config, f"{OURS}; dkim=pass header.d=@example.org")
    assert not trusted(config, f"{OURS}; dkim=pass header.d=evil.test; dmarc=pass header.from=evil.test")
    assert not trusted(config, "")


def test_no_header_of_ours_means_no(config):
    assert authentication_problem(decode(member_mail()), config, secret_ok=True) == \
        f"{OURS} did not report a DMARC or DKIM pass for example.org"
