"""Templates: the shipped ones render; mistakes fail at check time with file and line."""

from zoneinfo import ZoneInfo

import pytest
from helpers import REPO

from inboxd.checks import sample_contexts
from inboxd.errors import TemplateError
from inboxd.render import REQUIRED_TEMPLATES, Renderer


def test_shipped_templates_render_against_samples(config):
    renderer = Renderer(REPO / "templates", ZoneInfo("Europe/Berlin"))
    assert renderer.check(sample_contexts(config)) == []
    assert set(REQUIRED_TEMPLATES) <= renderer.names()
    ack = renderer.render("ack", sample_contexts(config)["*"][0])
    assert ack.subject == "[IT-42] We have your request: The printer on floor 3 is jammed"
    assert "Thursday 26 November 2026, 10:30" in ack.text  # due date in the team's timezone


def test_undefined_name_is_an_error_with_line(tmp_path, config):
    (tmp_path / "ack.txt").write_text("Subject: hi\n\nHello {{ item.requester_name }}\n{{ itme.ref }}\n")
    renderer = Renderer(tmp_path, ZoneInfo("UTC"))
    with pytest.raises(TemplateError) as caught:
        renderer.render("ack", sample_contexts(config)["*"][0])
    assert caught.value.problems == [f"{tmp_path / 'ack.txt'}:4: 'itme' is undefined"]


def test_syntax_error_missing_subject_and_missing_templates(tmp_path, config):
    (tmp_path / "ack.txt").write_text("Subject: x\n\n{% if %}\n")
    (tmp_path / "assigned.txt").write_text("Hello\n")
    problems = Renderer(tmp_path, ZoneInfo("UTC")).check(sample_contexts(config))
    text = "\n".join(problems)
    assert f"{tmp_path / 'ack.txt'}:3:" in text
    assert f"{tmp_path / 'assigned.txt'}:1: the first line must be 'Subject: ...'" in text
    assert f"{tmp_path / 'declined'}.txt: required template is missing" in text


def test_sandbox_refuses_internals(tmp_path, config):
    (tmp_path / "ack.txt").write_text("Subject: x\n\n{{ item.__class__.__mro__ }}\n")
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path, ZoneInfo("UTC")).render("ack", sample_contexts(config)["*"][0])
    assert "ack.txt:3: not allowed in a template: access to attribute '__class__'" in str(caught.value)


def test_a_template_is_compiled_once_per_process_and_again_when_its_file_changes(tmp_path, config, monkeypatch):
    """A worker taking over many teams at once builds a renderer for each: the shared files are compiled once."""
    from jinja2.sandbox import SandboxedEnvironment
    compiled: list[str] = []
    compile_ = SandboxedEnvironment.compile

    def counting(self, source, name=None, filename=None, raw=False, defer_init=False):
        compiled.append(name)
        return compile_(self, source, name, filename, raw, defer_init)
    monkeypatch.setattr(SandboxedEnvironment, "compile", counting)
    template = tmp_path / "ack.txt"
    template.write_text("Subject: hi\n\nHello {{ item.requester_name }}\n")
    context = sample_contexts(config)["*"][0]
    assert Renderer(tmp_path, ZoneInfo("UTC")).render("ack", context).text.startswith("Hello")
    assert Renderer(tmp_path, ZoneInfo("Europe/Berlin")).render("ack", context).text.startswith("Hello")
    assert compiled == ["ack.txt"]  # the second team's renderer used the first one's code
    template.write_text("Subject: hi\n\nGood day {{ item.requester_name }}\n")  # edited, then SIGHUP
    assert Renderer(tmp_path, ZoneInfo("UTC")).render("ack", context).text.startswith("Good day")
    assert compiled == ["ack.txt", "ack.txt"]
