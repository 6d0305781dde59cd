"""The embedded model reads ordinary prompts: free text -> the toy world's canonical caption."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxforcing.text import ToyTextEncoder
from relaxforcing.toyworld import VOCABULARY, caption, sample_world
from relaxforcing.toyworld.prompts import read_prompt

FILLER = ["the", "with", "very", "some", "slowly", "please", "nice", "is", "that", "scene", "video", "of", "here"]


@pytest.mark.parametrize("seed", range(40))
def test_every_world_caption_reads_back_as_itself(seed):
    scene = sample_world(seed).scene
    for text in (caption(scene), caption(scene, with_sizes=False)):
        read = read_prompt(text)
        assert (read.caption, read.ignored, read.changed, read.note()) == (text, (), False, None)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_filler_words_change_nothing(seed, data):
    text = caption(sample_world(seed).scene)
    words = text.split()
    for _ in range(data.draw(st.integers(1, 4))):
        words.insert(data.draw(st.integers(0, len(words))), data.draw(st.sampled_from(FILLER)))
    read = read_prompt(" ".join(words).upper() + "!")
    assert read.caption == text
    assert set(read.ignored) <= set(FILLER)


@pytest.mark.parametrize("prompt, expected", [
    ("a green square and a red circle moving on a black background",
     "a green square and a red circle bouncing on a black background"),
    ("Green squares sliding over a dark, striped background.", "a green square bouncing on a striped black background"),
    ("two big red balls drifting on grey",
     "a large red circle and a large orange circle bouncing on a gray background"),
    ("a dark blue cube", "a blue square bouncing on a black background"),
    ("a donut and a triangle", "a red ring and an orange triangle bouncing on a black background"),
    ("four rings", "a red ring, an orange ring and a yellow ring bouncing on a black background"),
])
def test_synonyms_counts_and_defaults(prompt, expected):
    assert read_prompt(prompt).caption == expected


def test_the_note_names_what_is_drawn_and_what_was_ignored():
    note = read_prompt("a red circle flying over a dark meadow").note()
    assert note == 'toy model: drawing "a red circle bouncing on a black background" (ignored: over, meadow)'


def test_a_prompt_with_nothing_drawable_is_one_line():
    with pytest.raises(ValueError, match="names nothing the toy model can draw; it draws circles, squares") as error:
        read_prompt("a cat walking on the beach")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="did you mean 'square'"):
        read_prompt("a red sqare")


def test_free_text_and_its_caption_encode_the_same():
    encoder = ToyTextEncoder(VOCABULARY, reader=read_prompt)
    free = "A green square and a red circle, moving on a dark background!"
    canonical = read_prompt(free).caption
    assert torch.equal(encoder([free]), encoder([canonical]))
    assert torch.equal(encoder([canonical]), ToyTextEncoder(VOCABULARY).encode([canonical]))
    assert encoder.interpret(canonical) is None and encoder.interpret(free).startswith("toy model: drawing")
