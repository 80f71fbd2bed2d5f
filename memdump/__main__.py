from memdump.cli import entry

entry()
