"""The image service (`osimage serve`), never imported by the SDK; importing it is free."""
