"""Datasets: the images a command trains on (servicer), and their decoding (imaging)."""
