"""Blob stores: where image data lives. `registry.open_store(url, options)` picks one by scheme."""
