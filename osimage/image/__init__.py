"""The Image service: ``osimage.image.v1`` holds the v1 resources and proxy."""
