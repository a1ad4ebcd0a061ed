"""The command line's engine flags: argparse choices and ranges from the library's own tables."""
