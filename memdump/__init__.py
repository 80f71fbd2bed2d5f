"""memdump: memory acquisition for forensics and incident response.

A library with a thin command line. What a script or another tool imports::

    import memdump

    result = memdump.acquire(memdump.DumpOptions(format="lime", output="host.lime",
                                                 manifest="host.json"))
    print(result.bytes_written, result.digests["sha256"])

* ``acquire(DumpOptions)`` -- one dump, as ``memdump [options]`` does it; returns a DumpResult.
* ``DumpOptions`` -- the dump's settings as one value (the command line builds one from its flags).
* ``open_source(name, host)`` -- a memory source (the DevMemory interface) to read yourself;
  ``probe_all(host)`` says which sources work here and why the others do not.
* ``open_image(path)`` -- an image read back: format, regions, notes.
* ``convert(in_path, out_path, to)`` and ``verify(image, manifest)`` -- the operations on images.

Errors a user can cause are ``MemdumpError`` (with ``exit_code``); the names below are loaded on
first use, so ``import memdump`` costs the command line nothing.
"""

from __future__ import annotations

__version__ = "0.1.0"

from memdump.lazy import lazy_exports

_EXPORTS = {
    "acquire": "memdump.acquisition",
    "DumpOptions": "memdump.acquisition",
    "DumpResult": "memdump.acquisition",
    "open_source": "memdump.sources",
    "probe_all": "memdump.sources",
    "Host": "memdump.host",
    "open_image": "memdump.image",
    "Image": "memdump.image",
    "convert": "memdump.conversion",
    "verify": "memdump.verification",
    "MemdumpError": "memdump.errors",
    "UsageError": "memdump.errors",
    "SourceUnavailable": "memdump.errors",
    "OutputError": "memdump.errors",
    "ImageError": "memdump.errors",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_exports("memdump", globals(), _EXPORTS)


def __dir__():
    return sorted(__all__)
