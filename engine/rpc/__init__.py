"""JSON-RPC client side: URL pool, endpoint policy, error classes, range sizing, transport."""
