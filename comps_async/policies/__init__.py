"""Built-in pipeline policies."""

from .auth import AuthPolicy
from .concurrency import ConcurrencyPolicy
from .logging import LoggingPolicy
from .retry import RetryPolicy

__all__ = ["AuthPolicy", "ConcurrencyPolicy", "LoggingPolicy", "RetryPolicy"]
