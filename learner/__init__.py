"""Sketch → generator: the generator, the sketch-matching loss, training, checkpoints, evaluation."""
