"""Declared input topics: how each topic's bytes become posts and tickets."""
