"""Image API v2: a thin adapter (decode -> `ImagesV2` -> encode) over the one catalogue."""
