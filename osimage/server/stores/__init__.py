"""Blob stores: where image data lives. `registry.open_store(url)` picks one by URL scheme."""
