"""botfleet: a daemon that hosts a fleet of Telegram sales bots."""

__version__ = "0.1.0"
