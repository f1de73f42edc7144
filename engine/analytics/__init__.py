"""Analytics over the staged rows: SQL templating, the rebuild, gates, snapshot, token positions."""
