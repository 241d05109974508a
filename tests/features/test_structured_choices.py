"""Templates with blanks and the robust choice parser: edge cases and a brute-force oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from critwin.errors import CritwinError
from critwin.features.choices import (
    DEFAULT_TEMPLATE,
    ChoiceTemplate,
    TemplateChoiceFeature,
    normalize,
    parse_choices,
)


def test_default_template_has_five_two_option_blanks_and_round_trips():
    t = ChoiceTemplate.parse(DEFAULT_TEMPLATE)
    assert t.k == 5 and all(len(o) == 2 for o in t.options)
    assert ChoiceTemplate.parse(t.as_text()) == t
    for filling in t.fillings():
        assert parse_choices(t, t.fill(filling)).choices == filling
    assert len(list(t.fillings())) == 32


def test_literal_braces_are_escaped():
    t = ChoiceTemplate.parse("set {{x}} = {a|b};")
    assert t.literals == ("set {x} = ", ";")
    assert t.fill(["a"]) == "set {x} = a;"
    assert ChoiceTemplate.parse(t.as_text()) == t


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("no blanks here", "no blanks"),
        ("a {cat|Cat} b", "duplicate options"),
        ("a {cat| cat } b", "duplicate options"),
        ("a {cat} b", "at least two"),
        ("a {cat||dog} b", "empty option"),
        ("a {cat|dog b", "never closed"),
        ("a cat|dog} b", "unmatched"),
        ("a {c{a|b}|d} b", "nested"),
    ],
)
def test_bad_templates_give_one_line_errors(text, needle):
    with pytest.raises(CritwinError, match=needle) as err:
        ChoiceTemplate.parse(text)
    assert "\n" not in str(err.value) and str(err.value).startswith("template")


def test_case_and_whitespace_are_ignored_and_spans_point_into_the_raw_text():
    t = ChoiceTemplate.parse(DEFAULT_TEMPLATE)
    raw = "  THE Quick\tcat   sat on the\nRED mat.  "
    p = parse_choices(t, raw)
    assert p.status == "ok"
    assert p.choices == ("quick", "cat", "sat", "red", "mat")
    assert [raw[a:b].lower() for a, b in p.spans] == ["quick", "cat", "sat", "red", "mat"]


def test_wrong_fillings_are_reported_not_guessed():
    t = ChoiceTemplate.parse(DEFAULT_TEMPLATE)
    assert parse_choices(t, "").status == "empty"
    assert parse_choices(t, "   \n").status == "empty"
    assert parse_choices(t, "The quick cat sat on the green mat.").status == "no_match"
    assert parse_choices(t, "The quick cat sat on the red mat").status == "no_match"  # missing "."
    assert parse_choices(t, "Thequick cat sat on the red mat.").status == "no_match"  # spacing differs
    extra = "Sure! The lazy dog lay on the blue rug. Hope that helps."
    assert parse_choices(t, extra).status == "no_match"
    assert parse_choices(t, extra, mode="search").choices == ("lazy", "dog", "lay", "blue", "rug")
    with pytest.raises(CritwinError, match="mode"):
        parse_choices(t, extra, mode="fuzzy")


def test_an_option_that_is_a_prefix_of_another_is_resolved_by_what_follows():
    t = ChoiceTemplate.parse("{cat|cats} are {here|there}.")
    assert parse_choices(t, "cats are here.").choices == ("cats", "here")
    assert parse_choices(t, "cat are there.").choices == ("cat", "there")
    t2 = ChoiceTemplate.parse("{a|ab}{bc|c}!")
    assert parse_choices(t2, "abc!").status == "ambiguous"  # a+bc and ab+c read the same
    assert parse_choices(t2, "ac!").choices == ("a", "c")


def test_template_feature_reads_strings_and_response_objects():
    t = ChoiceTemplate.parse("{x|y}.")
    feat = TemplateChoiceFeature(t)

    class Resp:
        response_text = "Y."

    assert feat("x.") == ("x",) and feat(Resp()) == ("y",) and feat("z.") is None
    with pytest.raises(CritwinError, match="cannot read text"):
        feat(3.5)


# A brute-force oracle: the readings of a text are the fillings whose normalized text equals it.
words = st.text(alphabet="abc", min_size=1, max_size=3)


@st.composite
def template_and_text(draw):
    k = draw(st.integers(1, 3))
    options = []
    for _ in range(k):
        opts = draw(st.lists(words, min_size=2, max_size=3, unique=True))
        options.append(tuple(opts))
    literals = [draw(st.sampled_from(["", " ", "-", " x ", ". "])) for _ in range(k + 1)]
    t = ChoiceTemplate(tuple(literals), tuple(options))
    filling = tuple(draw(st.sampled_from(o)) for o in options)
    text = t.fill(filling)
    # Perturb case and widen whitespace.
    chars = []
    for ch in text:
        if ch == " ":
            chars.append(draw(st.sampled_from([" ", "  ", "\t", " \n "])))
        else:
            chars.append(ch.upper() if draw(st.booleans()) else ch)
    pad = draw(st.sampled_from(["", " ", "\n"]))
    return t, filling, pad + "".join(chars) + pad


@settings(max_examples=300, deadline=None)
@given(template_and_text())
def test_parser_agrees_with_brute_force_over_all_fillings(case):
    t, filling, text = case
    target = normalize(text)[0]
    readings = {f for f in t.fillings() if normalize(t.fill(f))[0] == target}
    assert filling in readings
    p = parse_choices(t, text)
    if len(readings) == 1:
        assert p.status == "ok" and p.choices == filling
    else:
        assert p.status == "ambiguous" and p.choices is None
