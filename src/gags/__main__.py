from gags.cli import entry

entry()
