"""The sketchgen command line and the embedded local stack."""
