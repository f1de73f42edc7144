"""Screens pushed over the main screen: confirm dialogs, shard-count input, help, worker logs."""
