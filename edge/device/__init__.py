"""Device operations: ``install`` / ``rollback`` of a model into a folder the
camera watches, and ``verify`` of a file against its manifest."""
