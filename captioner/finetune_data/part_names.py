"""Readable object and part names for part captions, "<part> of <object>".

The releases name categories for machines: PACO uses LVIS names with a disambiguating
parenthesis ("car_(automobile)", 59 of its 456 object-part categories), PartImageNet names parts by
a super-category that no one says ("Quadruped Head", "Biped Hand") and spells tire "Tier". A caption
should read as a person would say it, so every name goes through a reviewed table; a name the table
does not know keeps its words, with any remaining parenthesis dropped.

Reviewed against the category lists of PACO-LVIS v1 (75 objects, 456 object-part pairs) and
PartImageNet (11 super-categories, 40 parts).
"""
from __future__ import annotations

import re

#: PACO (LVIS) object names → what a caption says.
PACO_OBJECT_NAMES = {
    "car_(automobile)": "car",
    "drum_(musical_instrument)": "drum",
    "glass_(drink_container)": "drinking glass",
    "mouse_(computer_equipment)": "computer mouse",
    "pan_(for_cooking)": "pan",
    "slipper_(footwear)": "slipper",
    "tape_(sticky_cloth_or_paper)": "tape",
    "cellular_telephone": "cell phone",
    "laptop_computer": "laptop",
    "microwave_oven": "microwave",
    "television_set": "television",
    "remote_control": "remote control",
    "tissue_paper": "tissue paper",
    "plastic_bag": "plastic bag",
    "trash_can": "trash can",
}

#: PACO part names that are run together or misspelt → what a caption says (others only lose their ``_``).
PACO_PART_NAMES = {
    "colied_tube": "coiled tube",  # PACO's spelling, on pipe
    "steeringwheel": "steering wheel",
    "turnsignal": "turn signal",
    "runningboard": "running board",
    "windowpane": "window pane",
    "pom_pom": "pom-pom",
}

#: PartImageNet super-categories → the object a caption names (the 158 ImageNet classes are grouped
#: by body plan: "Biped" holds apes and monkeys, "Quadruped" four-legged mammals).
PARTIMAGENET_OBJECT_NAMES = {
    "quadruped": "animal",
    "biped": "primate",
    "fish": "fish",
    "bird": "bird",
    "snake": "snake",
    "reptile": "reptile",
    "car": "car",
    "bicycle": "bicycle",
    "boat": "boat",
    "aeroplane": "airplane",
    "bottle": "bottle",
}

#: PartImageNet part names → what a caption says ("Tier" is its spelling of tire).
PARTIMAGENET_PART_NAMES = {
    "tier": "tire",
}

_PARENTHESIS = re.compile(r"\s*\([^)]*\)")


def readable_name(name: str, table: dict | None = None) -> str:
    """``name`` as a caption says it: the table's entry, else lower case words without ``_`` or a parenthesis."""
    key = " ".join(name.strip().split()).lower()
    if table:
        for candidate in (name.strip(), key, key.replace(" ", "_")):
            if candidate in table:
                return table[candidate]
    text = _PARENTHESIS.sub("", key.replace("_", " "))
    return " ".join(text.split())


def part_caption(part: str, obj: str, part_table: dict | None = None, object_table: dict | None = None) -> str:
    """The paper's part template, "<part> of <object>", with readable names."""
    return f"{readable_name(part, part_table)} of {readable_name(obj, object_table)}"
