"""Textual operator console: renders engine.status, calls EngineApi actions; no SQL."""
