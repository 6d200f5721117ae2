"""The ``COMPS_ASYNC`` idmtools platform: idmtools and idmtools-calibra on comps_async.

Installed with ``pip install 'comps-async[idmtools]'`` and registered through idmtools'
``idmtools_platform`` entry point, so one line in ``idmtools.ini`` (``type = COMPS_ASYNC``) or
``Platform("COMPS_ASYNC", endpoint=..., environment=...)`` is the only change. Nothing in
comps_async imports this package; importing it imports idmtools.
"""

from __future__ import annotations

from ._operations import RESUME_TAG, resume_key
from .platform import COMPSAsyncPlatform

__all__ = ["RESUME_TAG", "COMPSAsyncPlatform", "resume_key"]
