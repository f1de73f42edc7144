"""The ClickHouse store: client, schema, loader (the only writer), panel queries, maintenance."""
