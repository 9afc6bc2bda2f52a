"""Interpreters, model metadata, preprocessing, prediction and signatures:
what runs a model file, with no face finder and no camera."""
