"""Label and field selectors: Kubernetes syntax, matching semantics and error reporting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vwproxy.kube.errors import StatusError
from vwproxy.kube.selectors import FieldSelector, LabelSelector, Requirement


def bad(call: Any, *args: Any) -> StatusError:
    """Run `call(*args)`, which must fail with a 400 BadRequest, and return the error."""
    with pytest.raises(StatusError) as info:
        call(*args)
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    return info.value


# ---------------------------------------------------------------------------
# Label selector: matching, one table per operator

# (selector, labels, expected)
MATCH_TABLE: list[tuple[str, dict[str, str] | None, bool]] = [
    # everything
    ("", {}, True),
    ("", None, True),
    ("   ", {"a": "b"}, True),
    # = and ==
    ("a=b", {"a": "b"}, True),
    ("a=b", {"a": "c"}, False),
    ("a=b", {}, False),
    ("a=b", None, False),
    ("a==b", {"a": "b"}, True),
    ("a==b", {"a": "bb"}, False),
    ("a=", {"a": ""}, True),
    ("a=", {}, False),
    ("a=", {"a": "x"}, False),
    # != keeps objects without the key
    ("a!=b", {"a": "b"}, False),
    ("a!=b", {"a": "c"}, True),
    ("a!=b", {}, True),
    ("a!=b", None, True),
    ("a!=", {"a": ""}, False),
    # in
    ("a in (x,y)", {"a": "x"}, True),
    ("a in (x,y)", {"a": "y"}, True),
    ("a in (x,y)", {"a": "z"}, False),
    ("a in (x,y)", {}, False),
    ("a in ()", {"a": ""}, True),
    ("a in ()", {"a": "x"}, False),
    ("a in (,x)", {"a": ""}, True),
    # notin keeps objects without the key
    ("a notin (x,y)", {"a": "x"}, False),
    ("a notin (x,y)", {"a": "z"}, True),
    ("a notin (x,y)", {}, True),
    # exists / does not exist
    ("a", {"a": ""}, True),
    ("a", {"a": "v"}, True),
    ("a", {"b": "v"}, False),
    ("!a", {"b": "v"}, True),
    ("!a", {"a": ""}, False),
    ("!a", None, True),
    # gt / lt: integer comparison, non-integer or missing labels never match
    ("a>5", {"a": "6"}, True),
    ("a>5", {"a": "5"}, False),
    ("a>5", {"a": "10"}, True),  # numeric, not string, comparison
    ("a>5", {"a": "-7"}, False),
    ("a>5", {"a": "+6"}, True),
    ("a>5", {"a": "006"}, True),
    ("a>5", {"a": "x"}, False),
    ("a>5", {"a": "6.5"}, False),
    ("a>5", {"a": " 6"}, False),
    ("a>5", {"a": "1_0"}, False),
    ("a>5", {"a": "\u0667"}, False),  # ARABIC-INDIC SEVEN: int() would accept it, Go does not
    ("a>5", {"a": "99999999999999999999"}, False),  # beyond int64
    ("a>5", {}, False),
    ("a<5", {"a": "4"}, True),
    ("a<5", {"a": "5"}, False),
    ("a<5", {"a": "-100"}, True),
    ("a<5", {"a": ""}, False),
    ("a<5", {}, False),
    ("a>1,a<3", {"a": "2"}, True),
    ("a>1,a<3", {"a": "3"}, False),
    # conjunction, whitespace, keywords as keys and values, prefixed keys
    ("a=b,c=d", {"a": "b", "c": "d"}, True),
    ("a=b,c=d", {"a": "b"}, False),
    (" a = b , c  in(d) ,\t!e ", {"a": "b", "c": "d"}, True),
    (" a = b , c  in(d) ,\t!e ", {"a": "b", "c": "d", "e": "f"}, False),
    ("in=notin", {"in": "notin"}, True),
    ("notin in (in)", {"notin": "in"}, True),
    ("example.com/app=web", {"example.com/app": "web"}, True),
    ("example.com/app=web", {"app": "web"}, False),
    # duplicates are fine, contradictions simply match nothing
    ("a=b,a=b", {"a": "b"}, True),
    ("a,!a", {"a": "b"}, False),
    ("a,!a", {}, False),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCH_TABLE)
def test_label_selector_matches(text: str, labels: dict[str, str] | None, expected: bool) -> None:
    assert LabelSelector.parse(text).matches(labels) is expected


# (input, canonical form)
CANONICAL_TABLE: list[tuple[str, str]] = [
    ("", ""),
    ("  ", ""),
    ("!d, c in (y,x), a=b", "a=b,c in (x,y),!d"),
    ("a==b", "a=b"),
    ("a = ", "a="),
    ("x notin (b,a,b)", "x notin (a,b)"),
    ("x in ()", "x in ()"),
    ("x in (a,)", "x in (,a)"),
    ("x in(,)", "x in ()"),
    ("a<3,a>1,!a,a", "a,!a,a>1,a<3"),
    ("a=b,a=b", "a=b"),
    ("b,a", "a,b"),
    ("a!=b,a=c", "a=c,a!=b"),
    ("k in (in , notin)", "k in (in,notin)"),
    ("example.com/x>007", "example.com/x>007"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL_TABLE)
def test_label_selector_canonical_string(text: str, canonical: str) -> None:
    selector = LabelSelector.parse(text)
    assert str(selector) == canonical
    assert LabelSelector.parse(canonical) == selector
    assert hash(LabelSelector.parse(canonical)) == hash(selector)


def test_label_selector_equality_is_structural() -> None:
    assert LabelSelector.parse("a=b,c") == LabelSelector.parse("c, a==b")
    assert LabelSelector.parse("a=b") != LabelSelector.parse("a!=b")
    assert LabelSelector.parse("a in (x)") != LabelSelector.parse("a=x")
    assert LabelSelector.parse("a=b") != "a=b"
    assert len({LabelSelector.parse("a=b,c"), LabelSelector.parse("c,a=b")}) == 1


def test_everything_and_empty() -> None:
    everything = LabelSelector.everything()
    assert everything.empty
    assert str(everything) == ""
    assert everything == LabelSelector.parse("")
    assert everything.matches({"anything": "at-all"})
    assert everything.matches(None)
    assert not LabelSelector.parse("a").empty


def test_requirements_are_exposed_normalised() -> None:
    selector = LabelSelector.parse("b notin (z,y), a==x")
    assert [(r.key, r.operator, r.values) for r in selector.requirements] == [
        ("a", "=", ("x",)),
        ("b", "notin", ("y", "z")),
    ]
    assert LabelSelector([Requirement("a", "==", ("x",)), Requirement("b", "notin", ("z", "y"))]) == selector


def test_requirement_constructor_validates() -> None:
    assert "values set can't be empty" in bad(Requirement, "a", "in", ()).message
    assert "bad key" in bad(Requirement, "bad key", "exists", ()).message
    assert "integer" in bad(Requirement, "a", ">", ("x",)).message
    assert "one single value" in bad(Requirement, "a", "=", ("x", "y")).message
    assert "must be empty" in bad(Requirement, "a", "exists", ("x",)).message
    assert "~" in bad(Requirement, "a", "~", ("x",)).message


# ---------------------------------------------------------------------------
# Label selector: errors. (selector, text the message must quote)

ERROR_TABLE: list[tuple[str, str]] = [
    # bad keys
    ("a$=b", '"a$"'),
    ("-a=b", '"-a"'),
    ("a-=b", '"a-"'),
    ("Example.com/a=b", '"Example.com/a"'),
    ("/a=b", '"/a"'),
    ("a/=b", '"a/"'),
    ("a/b/c", '"a/b/c"'),
    ("x" * 64, '"' + "x" * 64 + '"'),
    ("p" * 254 + "/a", "prefix must be no more than 253"),
    ("!b@d", '"b@d"'),
    # bad values
    ("a=b$", '"b$"'),
    ("a=-b", '"-b"'),
    ("a in (x,y z)", "'z'"),
    ("a in (ok,b@d)", '"b@d"'),
    ("a=" + "v" * 64, '"' + "v" * 64 + '"'),
    ("a>x", '"x"'),
    ("a<1.5", '"1.5"'),
    ("a>-1", '"-1"'),  # a label value cannot start with '-', so neither can the bound
    ("a>", '""'),
    ("a>99999999999999999999", '"99999999999999999999"'),
    # unterminated or malformed value sets
    ("a in (x", '"a in (x"'),
    ("a in (", '"a in ("'),
    ("a in (x,", '"a in (x,"'),
    ("a notin x", "'x'"),
    ("a in (x=y)", "'='"),
    ("a in", '"a in"'),
    # stray and missing tokens
    ("a=b c", "'c'"),
    ("a b", "'b'"),
    ("a=b,", '"a=b,"'),
    (",a", "','"),
    ("a,,b", "','"),
    ("=b", "'='"),
    ("a=(b)", "'('"),
    ("a!b", "'!'"),
    ("!a=b", "'='"),
    ("!", '"!"'),
    ("!!a", "'!'"),
    ("a)", "')'"),
    ("a>=1", "'='"),
    ("a=b=c", "'='"),
]


@pytest.mark.parametrize(("text", "quoted"), ERROR_TABLE)
def test_label_selector_errors(text: str, quoted: str) -> None:
    error = bad(LabelSelector.parse, text)
    assert quoted in error.message
    assert error.to_status()["code"] == 400


def test_label_selector_error_messages_read_like_kubernetes() -> None:
    assert bad(LabelSelector.parse, "a$=b").message.startswith('unable to parse requirement: invalid label key "a$"')
    assert bad(LabelSelector.parse, "a=b c").message.startswith("found 'c', expected: ',' or end of string")
    assert bad(LabelSelector.parse, "a in (x").message.startswith(
        "unable to parse requirement: found end of string, expected: ',' or ')'"
    )


def test_label_selector_error_quotes_are_bounded() -> None:
    error = bad(LabelSelector.parse, "a=b " + "z" * 100_000)
    assert len(error.message) < 1000


# ---------------------------------------------------------------------------
# Label selector: metav1.LabelSelector


def test_from_dict_none_matches_nothing() -> None:
    nothing = LabelSelector.from_dict(None)
    assert not nothing.empty
    assert not nothing.matches({})
    assert not nothing.matches(None)
    assert not nothing.matches({"a": "b"})
    assert nothing == LabelSelector.nothing()
    # Its string form selects nothing anywhere and reads back to the same selector.
    assert LabelSelector.parse(str(nothing)) == nothing


@pytest.mark.parametrize("selector", [{}, {"matchLabels": {}}, {"matchExpressions": []}, {"matchLabels": None}])
def test_from_dict_empty_matches_everything(selector: dict[str, Any]) -> None:
    everything = LabelSelector.from_dict(selector)
    assert everything.empty
    assert everything == LabelSelector.everything()
    assert everything.matches({})
    assert everything.matches({"a": "b"})


FROM_DICT_TABLE: list[tuple[dict[str, Any], str]] = [
    ({"matchLabels": {"app": "web", "tier": ""}}, "app=web,tier="),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]}, "env in (dev,prod)"),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, "env notin (prod)"),
    ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, "env"),
    ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist", "values": []}]}, "!env"),
    (
        {
            "matchLabels": {"example.com/app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["api"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        },
        "!canary,example.com/app=web,tier in (api)",
    ),
]


@pytest.mark.parametrize(("selector", "equivalent"), FROM_DICT_TABLE)
def test_from_dict(selector: dict[str, Any], equivalent: str) -> None:
    converted = LabelSelector.from_dict(selector)
    assert converted == LabelSelector.parse(equivalent)
    assert str(converted) == equivalent


def test_from_dict_matching() -> None:
    selector = LabelSelector.from_dict(
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}
    )
    assert selector.matches({"app": "web"})
    assert selector.matches({"app": "web", "env": "dev"})
    assert not selector.matches({"app": "web", "env": "prod"})
    assert not selector.matches({"env": "dev"})


FROM_DICT_ERRORS: list[tuple[Any, str]] = [
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": []}]}, "values set can't be empty"),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn"}]}, "values set can't be empty"),
    ({"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]}, "must be empty"),
    ({"matchExpressions": [{"key": "env", "operator": "Gt", "values": ["1"]}]}, '"Gt"'),
    ({"matchExpressions": [{"key": "env", "operator": "in", "values": ["x"]}]}, '"in"'),
    ({"matchExpressions": [{"key": "env"}]}, "operator"),
    ({"matchExpressions": [{"key": "b@d", "operator": "Exists"}]}, '"b@d"'),
    ({"matchExpressions": [{"operator": "Exists"}]}, 'invalid label key ""'),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["o k"]}]}, '"o k"'),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": "prod"}]}, "values must be a list"),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": [1]}]}, "values must be a list of strings"),
    ({"matchExpressions": ["env"]}, "matchExpressions[0]"),
    ({"matchExpressions": {"key": "env"}}, "matchExpressions must be a list"),
    ({"matchLabels": {"b@d": "x"}}, '"b@d"'),
    ({"matchLabels": {"a": "b@d"}}, '"b@d"'),
    ({"matchLabels": {"a": 1}}, "matchLabels"),
    ({"matchLabels": ["a"]}, "matchLabels must be an object"),
    ("a=b", "expected an object"),
]


@pytest.mark.parametrize(("selector", "quoted"), FROM_DICT_ERRORS)
def test_from_dict_errors(selector: Any, quoted: str) -> None:
    assert quoted in bad(LabelSelector.from_dict, selector).message


# ---------------------------------------------------------------------------
# Field selector


FIELD_PARSE_TABLE: list[tuple[str, list[tuple[str, str, str]], str]] = [
    ("", [], ""),
    (",,", [], ""),
    ("metadata.name=web", [("metadata.name", "=", "web")], "metadata.name=web"),
    ("metadata.name==web", [("metadata.name", "=", "web")], "metadata.name=web"),
    ("status.phase!=Running", [("status.phase", "!=", "Running")], "status.phase!=Running"),
    (
        "status.phase!=Running,metadata.name=web",
        [("metadata.name", "=", "web"), ("status.phase", "!=", "Running")],
        "metadata.name=web,status.phase!=Running",
    ),
    ("a=", [("a", "=", "")], "a="),
    (r"a=x\,y", [("a", "=", "x,y")], r"a=x\,y"),
    (r"a=x\=y", [("a", "=", "x=y")], r"a=x\=y"),
    (r"a=x\\y", [("a", "=", "x\\y")], r"a=x\\y"),
    (r"a=x\\,b=y", [("a", "=", "x\\"), ("b", "=", "y")], r"a=x\\,b=y"),
    ("a = b", [("a ", "=", " b")], "a = b"),  # no trimming, as in Kubernetes
    ("a=b,a=b", [("a", "=", "b")], "a=b"),
    ("spec.nodeName=", [("spec.nodeName", "=", "")], "spec.nodeName="),
]


@pytest.mark.parametrize(("text", "terms", "canonical"), FIELD_PARSE_TABLE)
def test_field_selector_parse(text: str, terms: list[tuple[str, str, str]], canonical: str) -> None:
    selector = FieldSelector.parse(text)
    assert selector.requirements() == terms
    assert str(selector) == canonical
    assert FieldSelector.parse(canonical) == selector
    assert selector.empty is (not terms)


FIELD_ERRORS: list[tuple[str, str]] = [
    ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
    ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
    ("a!b", "can't understand 'a!b'"),
    ("a=b=c", "'='"),
    ("a=b\\", "lone"),
    (r"a=b\n", r"'\n'"),
    ("a!==b", "'a!==b'"),
]


@pytest.mark.parametrize(("text", "quoted"), FIELD_ERRORS)
def test_field_selector_errors(text: str, quoted: str) -> None:
    assert quoted in bad(FieldSelector.parse, text).message


def test_field_selector_matches() -> None:
    fields = {"metadata.name": "web", "metadata.namespace": "default", "status.phase": "Running"}
    assert FieldSelector.parse("").matches(fields)
    assert FieldSelector.parse("metadata.name=web").matches(fields)
    assert not FieldSelector.parse("metadata.name=api").matches(fields)
    assert FieldSelector.parse("metadata.name!=api").matches(fields)
    assert not FieldSelector.parse("metadata.name!=web").matches(fields)
    assert FieldSelector.parse("metadata.name=web,status.phase!=Failed").matches(fields)
    assert not FieldSelector.parse("metadata.name=web,status.phase!=Running").matches(fields)
    # absent fields compare as ""
    assert FieldSelector.parse("spec.nodeName=").matches(fields)
    assert not FieldSelector.parse("spec.nodeName!=").matches(fields)
    assert FieldSelector.parse("spec.nodeName!=node-1").matches(fields)
    assert not FieldSelector.parse("spec.nodeName=node-1").matches(fields)
    # escaped values match the unescaped text
    assert FieldSelector.parse(r"a=x\,y\=z").matches({"a": "x,y=z"})


def test_field_selector_exact_and_names() -> None:
    selector = FieldSelector.parse("metadata.name=web,metadata.namespace!=kube-system,status.phase==Running")
    assert selector.exact("metadata.name") == "web"
    assert selector.exact("status.phase") == "Running"
    assert selector.exact("metadata.namespace") is None
    assert selector.exact("spec.nodeName") is None
    assert selector.field_names() == {"metadata.name", "metadata.namespace", "status.phase"}
    assert FieldSelector.parse("metadata.name=").exact("metadata.name") == ""
    assert FieldSelector.everything().field_names() == set()
    assert FieldSelector.everything().empty
    assert FieldSelector.everything() == FieldSelector.parse("")


def test_field_selector_constructor_rejects_unknown_operator() -> None:
    assert "'in'" in bad(FieldSelector, [("a", "in", "b")]).message
    assert FieldSelector([("a", "==", "b")]) == FieldSelector.parse("a=b")


# ---------------------------------------------------------------------------
# Properties

_NAME = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?", fullmatch=True)
_DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?", fullmatch=True)
_PREFIX = st.lists(_DNS_LABEL, min_size=1, max_size=3).map(".".join)
KEYS = st.one_of(
    st.sampled_from(["a", "b", "app", "in", "notin", "example.com/app"]),
    _NAME,
    st.tuples(_PREFIX, _NAME).map("/".join),
)
VALUES = st.one_of(st.sampled_from(["", "x", "y", "in", "notin", "1", "10"]), _NAME)
NUMBERS = st.one_of(st.integers(0, 20).map(str), st.from_regex(r"[0-9]{1,18}", fullmatch=True))

Spec = tuple[str, str, tuple[str, ...]]


@st.composite
def requirement_specs(draw: st.DrawFn) -> Spec:
    key = draw(KEYS)
    op = draw(st.sampled_from(["exists", "!", "=", "==", "!=", "in", "notin", ">", "<"]))
    if op in ("exists", "!"):
        return (key, op, ())
    if op in ("in", "notin"):
        return (key, op, tuple(draw(st.lists(VALUES, min_size=1, max_size=4))))
    if op in (">", "<"):
        return (key, op, (draw(NUMBERS),))
    return (key, op, (draw(VALUES),))


@st.composite
def selector_texts(draw: st.DrawFn) -> tuple[str, list[Spec]]:
    """A valid selector string, written with arbitrary spacing, and the specs in it."""
    specs = draw(st.lists(requirement_specs(), max_size=5))
    space = st.sampled_from(["", " ", "  ", "\t", "\n"])
    gap = st.sampled_from([" ", "  ", "\t"])  # where two words meet, some space is needed
    parts: list[str] = []
    for key, op, values in specs:
        if op == "exists":
            text = key
        elif op == "!":
            text = "!" + draw(space) + key
        elif op in ("in", "notin"):
            items = (draw(space) + v + draw(space) for v in values)
            text = key + draw(gap) + op + draw(space) + "(" + ",".join(items) + ")"
        else:
            text = key + draw(space) + op + draw(space) + values[0]
        parts.append(draw(space) + text + draw(space))
    return ",".join(parts), specs


def normalise(spec: Spec) -> Spec:
    key, op, values = spec
    if op == "==":
        return (key, "=", values)
    if op in ("in", "notin"):
        return (key, op, tuple(sorted(set(values))))
    return spec


def reference_int(text: str) -> int | None:
    digits = text[1:] if text and text[0] in "+-" else text
    if not digits or any(c not in "0123456789" for c in digits):
        return None
    number = int(text)
    return number if -(2**63) <= number < 2**63 else None


def reference_matches(specs: list[Spec], labels: Mapping[str, str]) -> bool:
    """Kubernetes' label selector semantics, written out case by case."""
    for key, op, values in specs:
        has = key in labels
        value = labels.get(key)
        if op == "exists":
            ok = has
        elif op == "!":
            ok = not has
        elif op in ("=", "=="):
            ok = has and value == values[0]
        elif op == "!=":
            ok = (not has) or value != values[0]
        elif op == "in":
            ok = has and value in values
        elif op == "notin":
            ok = (not has) or value not in values
        else:
            number = reference_int(value) if value is not None else None
            bound = int(values[0])
            ok = number is not None and (number > bound if op == ">" else number < bound)
        if not ok:
            return False
    return True


@given(selector_texts())
def test_property_parse_of_str_round_trips(generated: tuple[str, list[Spec]]) -> None:
    text, specs = generated
    selector = LabelSelector.parse(text)
    assert {(r.key, r.operator, r.values) for r in selector.requirements} == {normalise(s) for s in specs}
    again = LabelSelector.parse(str(selector))
    assert again == selector
    assert hash(again) == hash(selector)
    assert str(again) == str(selector)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_matches_agrees_with_reference(data: st.DataObject) -> None:
    text, specs = data.draw(selector_texts())
    selector = LabelSelector.parse(text)
    # Draw labels mostly from the selector's own keys and values so that every
    # operator is exercised on present, absent, equal and different values.
    keys = [key for key, _, _ in specs] + ["other"]
    values = [v for _, _, vs in specs for v in vs] + ["", "z", "-3", "+4", "abc", "12"]
    key_pool = st.sampled_from(keys)
    value_pool = st.one_of(st.sampled_from(values), NUMBERS, st.integers(-(2**64), 2**64).map(str))
    for _ in range(5):
        labels = data.draw(st.dictionaries(key_pool, value_pool, max_size=len(keys)))
        assert selector.matches(labels) is reference_matches(specs, labels)


SELECTOR_ALPHABET = st.sampled_from(list("ab=!(),<>/.-_019 \tin") + ["in", "notin", " in ", " notin "])


@pytest.mark.parametrize(
    "texts",
    [st.text(), st.lists(SELECTOR_ALPHABET, max_size=20).map("".join)],
    ids=["any-text", "selector-alphabet"],
)
def test_property_label_parse_only_raises_status_error(texts: st.SearchStrategy[str]) -> None:
    @given(texts)
    def check(text: str) -> None:
        try:
            selector = LabelSelector.parse(text)
        except StatusError as error:
            assert error.code == 400
            assert error.message
        else:
            # Whatever parses also survives the canonical round trip.
            assert LabelSelector.parse(str(selector)) == selector

    check()


FIELD_ALPHABET = st.sampled_from(list("ab.=!,\\ x"))


@pytest.mark.parametrize(
    "texts",
    [st.text(), st.lists(FIELD_ALPHABET, max_size=20).map("".join)],
    ids=["any-text", "selector-alphabet"],
)
def test_property_field_parse_only_raises_status_error(texts: st.SearchStrategy[str]) -> None:
    @given(texts)
    def check(text: str) -> None:
        try:
            selector = FieldSelector.parse(text)
        except StatusError as error:
            assert error.code == 400
            assert error.message
        else:
            assert FieldSelector.parse(str(selector)) == selector

    check()


FIELD_NAMES = st.sampled_from(["metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"])


@given(st.lists(st.tuples(FIELD_NAMES, st.sampled_from(["=", "==", "!="]), st.text()), max_size=4))
def test_property_field_selector_round_trips_any_value(terms: list[tuple[str, str, str]]) -> None:
    selector = FieldSelector(terms)
    assert FieldSelector.parse(str(selector)) == selector
    # Each term's own value satisfies `=` and fails `!=`.
    for name, op, value in terms:
        single = FieldSelector([(name, op, value)])
        assert single.matches({name: value}) is (op != "!=")
