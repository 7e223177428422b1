"""The pipeline stages, each a small module with one declared input and output.

ingest -> cutout -> layout -> edges -> scene -> composite -> export -> check
"""
