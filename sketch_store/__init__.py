"""What a sketch is and where it lives: spec, frequency laws, feature maps, sketch values.

``from sketch_store import SketchSpec, Sketch, FeatureMap`` covers the common uses.
"""

from sketch_store.errors import SketchgenError, SpecError, SpecMismatchError
from sketch_store.features import FeatureMap
from sketch_store.sketch import Sketch, load_sketch, save_sketch
from sketch_store.spec import SketchSpec

__all__ = ["FeatureMap", "Sketch", "SketchSpec", "SketchgenError", "SpecError", "SpecMismatchError",
           "load_sketch", "save_sketch"]
