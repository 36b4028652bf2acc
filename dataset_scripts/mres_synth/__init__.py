"""MRES-Synth: procedural scenes of objects made of named parts, with unambiguous expressions."""

from .builder import (
    SPLITS,
    UNSEEN_SPLITS,
    MRESSynth,
    MRESSynthConfig,
    build_mres_synth,
    generate_row,
    scene_for,
    scene_to_row,
)
from .expressions import Descriptor, parse_expression, resolve
from .scene import Scene, SceneObject, generate_scene
from .vocabulary import CATEGORIES, COLOURS, held_out_combinations

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "Descriptor",
    "MRESSynth",
    "MRESSynthConfig",
    "SPLITS",
    "UNSEEN_SPLITS",
    "Scene",
    "SceneObject",
    "build_mres_synth",
    "generate_row",
    "generate_scene",
    "held_out_combinations",
    "parse_expression",
    "resolve",
    "scene_for",
    "scene_to_row",
]
