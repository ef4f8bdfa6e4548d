"""asterisk-cdr-poller: incoming calls from Asterisk's cdr table, with their recordings."""

__version__ = "0.1.0"
