"""Aggregator stage: registers -> consumption -> standard coal, carbon and intensity."""
