"""Captions of the synthetic pictures: varied sentences that name each shape's colour (or not).

`make_captions(rng, record)` gives a picture's captions from its ground-truth record (the
`objects` and `background` that `colorfeat.sources.synthetic.draw_image` drew): the first names
every object's colour, the others may not, so the captions stage has some to drop.
"""

from __future__ import annotations

import numpy as np

# How a caption says where one of several objects stands.
ON = {"left": "on the left", "middle": "in the middle", "right": "on the right"}


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


_ONE_COLOUR = (
    "{a_size_colour} {shape} on {a_bg} background",
    "{a_colour} {shape}",
    "there is {a_colour} {shape} in the picture",
    "The {shape} is {colour}.",
    "a picture of {a_size} {shape} painted {colour}",
    "{A_colour} {shape} sits on {a_bg} surface",
    "{A_colour} {shape} against {a_bg} pattern.",
    "a {size} {shape}, coloured {colour}, on {a_bg} floor",
)
_ONE_PLAIN = (
    "{a_size} {shape} on {a_bg} background",
    "a simple drawing of {a_shape}",
    "one {shape} on a textured backdrop",
    "{A_shape} placed on {a_bg} floor.",
)
_MANY_COLOUR = (
    "{list} on {a_bg} background",
    "{n} shapes: {list}",
    "a picture with {list}",
    "{List}.",
)
# How one of several objects is named: always its colour, shape and place ("on the left").
_OBJECT_PHRASES = (
    "{a_colour_shape} {on}",
    "{on} {a_colour_shape}",
    "the {shape} {on} is {colour}",
)
# Only the first phrase reads well after "a picture with" or before "on a ... background".
_PHRASE_FITS_ANY_TEMPLATE = 0
_MANY_PLAIN = (
    "{n} shapes on {a_bg} background",
    "{shapes} on a textured floor",
    "several shapes scattered over {a_bg} pattern",
)
_NUMBERS = {2: "two", 3: "three"}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def make_captions(rng: np.random.Generator, record: dict, n: int = 5) -> list[str]:
    """n captions of a picture; the first names every object's colour, the others may not."""
    objs, bg = record["objects"], record["background"]
    if len(objs) == 1:
        o = objs[0]
        fields = {
            "shape": o["shape"],
            "colour": o["color"],
            "size": o["size"],
            "a_colour": _a(o["color"]),
            "A_colour": _a(o["color"]).capitalize(),
            "a_size": _a(o["size"]),
            "a_size_colour": _a(f"{o['size']} {o['color']}"),
            "a_shape": _a(o["shape"]),
            "A_shape": _a(o["shape"]).capitalize(),
            "a_bg": _a(bg),
        }

        def coloured() -> str:
            return _ONE_COLOUR[rng.integers(len(_ONE_COLOUR))].format(**fields)

        plain = _ONE_PLAIN
    else:
        fields = {
            "n": _NUMBERS[len(objs)],
            "shapes": _join([_a(o["shape"]) for o in objs]),
            "a_bg": _a(bg),
        }

        def coloured() -> str:
            return _many_colour_caption(rng, objs, fields)

        plain = _MANY_PLAIN
    out = [coloured()]
    for _ in range(n - 1):
        named = rng.random() < 0.6
        out.append(coloured() if named else plain[rng.integers(len(plain))].format(**fields))
    return out


def _many_colour_caption(rng: np.random.Generator, objs: list[dict], fields: dict) -> str:
    """A caption naming every object's colour, shape and place, from left to right.

    Objects are named in reading order, as people list what they see, so both the place words
    and the order of mention tell which colour goes where.
    """
    style = int(rng.integers(len(_OBJECT_PHRASES)))
    phrases = [
        _OBJECT_PHRASES[style].format(
            a_colour_shape=_a(f"{o['color']} {o['shape']}"),
            on=ON[o["position"]],
            shape=o["shape"],
            colour=o["color"],
        )
        for o in objs  # drawn left to right
    ]
    templates = _MANY_COLOUR if style == _PHRASE_FITS_ANY_TEMPLATE else _MANY_COLOUR[1::2]
    template = templates[rng.integers(len(templates))]
    return template.format(**fields, list=_join(phrases), List=_join(phrases).capitalize())
