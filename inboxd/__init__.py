"""inboxd: a shared mailbox turned into a request tracker that keeps the team's promises."""

__version__ = "0.1.0"
