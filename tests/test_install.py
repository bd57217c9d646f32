"""A plain `pip install inboxd` has no aiosmtpd or pymap: only the demo (and the tests' servers) need them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib

from helpers import REPO

DEMO_ONLY = ("aiosmtpd", "pymap")

# As if neither were installed: importing them raises ImportError.
WITHOUT_DEMO_EXTRA = textwrap.dedent("""
    import pkgutil, sys
    sys.modules["aiosmtpd"] = None
    sys.modules["pymap"] = None
    from click.testing import CliRunner
    import inboxd
    from inboxd.cli import cli

    for module in pkgutil.walk_packages(inboxd.__path__, "inboxd."):
        if not module.name.endswith("__main__"):
            __import__(module.name)  # every module imports without them

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "demo" in result.output, result.output
    result = CliRunner().invoke(cli, ["demo"])
    print(result.exit_code, result.output, end="")
""")


def test_the_cli_and_every_module_work_without_the_demo_extra():
    done = subprocess.run([sys.executable, "-c", WITHOUT_DEMO_EXTRA], capture_output=True, text=True,
                          timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    # and `inboxd demo` says, in one line, what to install
    assert done.stdout == ("1 error: the demo needs aiosmtpd and pymap, which a plain install leaves out: "
                           "pip install aiosmtpd pymap (or '.[demo]' from a checkout)\n"), done.stdout


def test_runtime_dependencies_leave_out_the_demo_servers_and_test_pulls_them_in():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [dep.split(">")[0].split("=")[0].split("[")[0].strip().lower() for dep in project["dependencies"]]
    assert not set(names) & set(DEMO_ONLY), names
    extras = project["optional-dependencies"]
    assert sorted(dep.split(">")[0] for dep in extras["demo"]) == sorted(DEMO_ONLY)
    own = [d.removeprefix("inboxd[").removesuffix("]").split(",") for d in extras["test"] if d.startswith("inboxd[")]
    assert any("demo" in names for names in own)  # README: pip install -e '.[test]' && inboxd demo
