"""Datasets: loaders for the paper's datasets in their real layouts, and the built-in generated dataset (``shapes``)."""
