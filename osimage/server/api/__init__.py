"""HTTP handlers of the v1 API: decode with `osimage.wire`, call the service, encode with wire."""
