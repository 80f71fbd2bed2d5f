"""Memory sources: one module per source, each registering itself (``registry.register``).

``open_source`` chooses and opens one before the first byte is written; ``probe_all`` says which
work here and why the others do not. To add a source: a module with a ``DevMemory`` subclass
decorated with ``@register`` (and, for one shipped with memdump, its module in
``registry.SOURCE_MODULES``, so it is imported only when asked for).
"""

from __future__ import annotations

from memdump.sources.base import LIMITED, UNUSABLE, USABLE, DevMemory, Hole, Probe, ProbeStatus
from memdump.sources.registry import names, open_source, probe_all, register, source_class

__all__ = ["DevMemory", "Hole", "Probe", "ProbeStatus", "USABLE", "LIMITED", "UNUSABLE", "names",
           "open_source", "probe_all", "register", "source_class"]
