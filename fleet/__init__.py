"""botfleet: a daemon that hosts a fleet of Telegram sales bots."""

from fleet.lazytypes import defer_aiogram_types

__version__ = "0.1.0"

# Before anything imports aiogram: its types are then built when first used
# (about 85 MiB and 1.7 s less per process; see fleet/lazytypes.py).
defer_aiogram_types()
