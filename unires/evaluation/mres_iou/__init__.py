"""Folder of the `mres_iou` evaluate module; a package only so that installs ship its files.

Load it with `evaluate.load(unires.evaluation.MRES_IOU_METRIC_PATH)`.
"""
