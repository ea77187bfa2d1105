"""Image API v1: `image.Image`, image members and the ``conn.image`` proxy."""
