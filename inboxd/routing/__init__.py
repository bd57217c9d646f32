"""Routing: the admin's rule files, loaded and validated once, and evaluated purely per mail."""

from .conditions import Condition
from .loader import load_rules
from .rules import Decision, Decline, Disposition, Ignore, Queue, Redirect, Rule, RuleSet

__all__ = ["Condition", "Decision", "Decline", "Disposition", "Ignore", "Queue",
           "Redirect", "Rule", "RuleSet", "load_rules"]
