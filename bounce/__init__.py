"""Returned mail: detect, classify and thread bounces, complaints and replies."""
