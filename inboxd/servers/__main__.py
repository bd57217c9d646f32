"""``python -m inboxd.servers smtp --port P --dir D``: a capture in its own process, until SIGTERM."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from .smtp import SmtpCapture


def main(argv: list[str] | None = None) -> None:
    """``python -m inboxd.servers smtp --port P --dir D``: run a capture until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m inboxd.servers")
    smtp = parser.add_subparsers(dest="server", required=True).add_parser("smtp", help="file every mail")
    smtp.add_argument("--port", type=int, required=True)
    smtp.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = {signal.SIGTERM, signal.SIGINT}
    # block before the server thread starts, so it inherits the mask and sigwait gets the signal
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with SmtpCapture(args.dir, args.port):
        signal.sigwait(stop)


if __name__ == "__main__":
    main()
