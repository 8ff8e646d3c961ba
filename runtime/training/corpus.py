"""A small, license-clean English corpus generated from templates, and where it lives.

Why generated: tests and the simulator must never download anything, and a corpus written by
a seeded program is license-clean by construction and reproducible byte for byte. Why
*templates with structure* rather than random words: a tiny model has to show a clearly falling
loss in a few dozen steps, so the text needs learnable regularities (recurring characters,
fixed story arcs, agreement between a name and its pronoun, an object that comes back at the
end) while still offering enough variety that it cannot be memorised in a handful of batches.

The generated files are committed under ``data/`` (see ``make_corpus.py``); this module knows
how to regenerate them and where they are.
"""

from __future__ import annotations

import random
from pathlib import Path

from swarm_tune.runtime.resources import shipped_dir

# data/ in a checkout, swarm_tune/data in an installed wheel (runtime/resources.py).
DATA_DIR = shipped_dir("data")
SHIPPED_CORPUS = "tinytales"  # the name a data setting uses for the corpus shipped in data/
CORPUS_TRAIN = DATA_DIR / "tinytales-train.txt"
CORPUS_VALID = DATA_DIR / "tinytales-valid.txt"
TOKENIZER_PATH = DATA_DIR / "tinytales-tokenizer.json"

CORPUS_SEED = 20240611
TRAIN_STORIES = 2600
VALID_STORIES = 250

_NAMES = [
    ("Tom", "he", "his"),
    ("Lily", "she", "her"),
    ("Ben", "he", "his"),
    ("Mia", "she", "her"),
    ("Sam", "he", "his"),
    ("Anna", "she", "her"),
    ("Max", "he", "his"),
    ("Lucy", "she", "her"),
    ("Leo", "he", "his"),
    ("Sara", "she", "her"),
    ("Jack", "he", "his"),
    ("Emma", "she", "her"),
]
_ANIMALS = ["dog", "cat", "bird", "frog", "bunny", "duck", "fox", "bear", "mouse", "fish"]
_ADJ = ["little", "big", "happy", "small", "brave", "shy", "funny", "kind", "sleepy", "curious"]
_COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "white"]
_OBJECTS = ["ball", "kite", "box", "hat", "book", "cup", "toy car", "drum", "boat", "doll"]
_PLACES = ["park", "garden", "forest", "beach", "farm", "school", "lake", "hill", "yard", "town"]
_WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy"]
_FEEL_GOOD = ["happy", "glad", "proud", "excited"]
_FEEL_BAD = ["sad", "scared", "worried", "upset"]
_ACTIONS = ["play", "run", "jump", "sing", "dance", "read", "draw", "swim"]
_FOODS = ["cake", "apple", "cookie", "soup", "bread", "banana", "pie"]


def _story(rng: random.Random) -> str:
    name, he, his = rng.choice(_NAMES)
    friend, fhe, _ = rng.choice([n for n in _NAMES if n[0] != name])
    animal = rng.choice(_ANIMALS)
    adj = rng.choice(_ADJ)
    color = rng.choice(_COLORS)
    obj = rng.choice(_OBJECTS)
    place = rng.choice(_PLACES)
    action = rng.choice(_ACTIONS)
    good = rng.choice(_FEEL_GOOD)
    bad = rng.choice(_FEEL_BAD)
    food = rng.choice(_FOODS)
    He = he.capitalize()
    opening = rng.choice(
        [
            f"Once upon a time, there was a {adj} {animal} named {name}.",
            f"One {rng.choice(_WEATHER)} day, a {adj} {animal} named {name} went to the {place}.",
            f"There was a {adj} {animal} called {name} who lived near the {place}.",
        ]
    )
    middle_kind = rng.randrange(3)
    if middle_kind == 0:
        middle = (
            f"{name} had a {color} {obj}. {He} loved to {action} with {his} {obj} every day. "
            f"One day, the {color} {obj} was lost at the {place}. {name} felt {bad}. "
            f"{He} looked under the trees and behind the rocks. "
            f'Then {friend} came and said, "I can help you find it!" '
            f"They looked together, and soon {friend} found the {color} {obj}."
        )
        ending = f'{name} was {good}. {He} said, "Thank you, {friend}!" and they played all day.'
    elif middle_kind == 1:
        middle = (
            f"{name} wanted to {action}, but {he} was too {rng.choice(['small', 'tired', 'shy'])}. "
            f"{his.capitalize()} friend {friend} said, "
            f'"Do not be {bad}. Let us {action} together." '
            f"So {name} and {friend} went to the {place} to {action}. "
            f"At first it was hard, but {name} tried again and again."
        )
        ending = (
            f"In the end, {name} could {action} very well. {He} felt {good}, "
            f"and {friend} gave {name} a piece of {food}."
        )
    else:
        middle = (
            f"{name} found a {color} {obj} at the {place}. {He} did not know whose it was. "
            f"{He} asked a {rng.choice(_ADJ)} {rng.choice(_ANIMALS)}, "
            f'but it said, "It is not mine." '
            f"Then {name} saw {friend}, who looked {bad}. "
            f'"Is this your {obj}?" asked {name}. "Yes!" said {friend}.'
        )
        ending = (
            f"{friend} was so {good} that {fhe} shared "
            f"{rng.choice(['a', 'some'])} {food} with {name}. "
            f"From that day on, they were best friends."
        )
    moral = rng.choice(
        [
            "",
            " The moral of the story is to always help your friends.",
            " They learned that sharing makes everyone happy.",
            " It was the best day ever.",
        ]
    )
    return f"{opening} {middle} {ending}{moral}"


def generate_stories(count: int, seed: int) -> list[str]:
    """``count`` stories, one line each, fully determined by ``seed``."""
    rng = random.Random(seed)
    return [_story(rng) for _ in range(count)]


def write_corpus(data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """Write the train and held-out files; the held-out split uses a different seed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    train = data_dir / CORPUS_TRAIN.name
    valid = data_dir / CORPUS_VALID.name
    train.write_text("\n".join(generate_stories(TRAIN_STORIES, CORPUS_SEED)) + "\n", "utf-8")
    valid.write_text("\n".join(generate_stories(VALID_STORIES, CORPUS_SEED + 1)) + "\n", "utf-8")
    return train, valid
