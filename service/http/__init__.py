"""The edge: what clients meet before and after a resource (decoding, errors, docs, access)."""
