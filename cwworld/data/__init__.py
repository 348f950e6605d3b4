"""Datasets and data sources for cwworld."""
