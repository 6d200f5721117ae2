"""Built-in pipeline policies. ``RetryPolicy`` is the one you configure (``Session(retry=)``);
authentication, the concurrency limit and logging are installed by every Session, so their
classes (``policies.auth``, ``.concurrency``, ``.logging``) are not offered for ``policies=``,
where they would apply twice."""

from .retry import RetryPolicy

__all__ = ["RetryPolicy"]
