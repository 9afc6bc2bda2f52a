"""Third-party code vendored unmodified; provenance, licence and checksums in NOTICE."""
