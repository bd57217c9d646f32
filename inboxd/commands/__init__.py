"""Owner and team keywords (#take, #eta friday, #done): one small class per command, registered by name.

Commands decide purely: each takes the item's state and returns the new state, what changed and
the mails it calls for. The conversation applies them in order, all or nothing.
"""

from .base import COMMANDS, MAX_KEYWORDS, Command, CommandContext, CommandPlan, Effect, Keyword, Refused  # noqa: I001
from .base import did_you_mean, help_table, plan_commands, register, split_keywords
from . import builtin  # noqa: F401  (importing it registers the keywords of docs/conversations.md)
from .builtin import MEMBER_KEYWORDS
from .merge import merge_keyword_mails, one_per_recipient, with_answer

__all__ = ["COMMANDS", "MAX_KEYWORDS", "MEMBER_KEYWORDS", "Command", "CommandContext", "CommandPlan", "Effect",
           "Keyword", "Refused", "did_you_mean", "help_table", "merge_keyword_mails", "one_per_recipient",
           "plan_commands", "register", "split_keywords", "with_answer"]
