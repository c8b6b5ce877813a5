"""The imgpipe command line and its commands."""
