"""memdump: memory acquisition for forensics and incident response.

A library with a thin command line: sources (the DevMemory interface) say what they can read,
walkers turn a source into output streams, and ``memdump.cli`` binds them to the classic flags.
"""

__version__ = "0.1.0"
