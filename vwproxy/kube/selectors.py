"""Kubernetes label and field selectors: parsing, canonical printing and matching.

Three inputs are understood, each with the semantics of the Kubernetes API server:

* the `?labelSelector=` string (k8s.io/apimachinery/pkg/labels `Parse`):
  `env=prod,tier in (web,api),!canary,replicas>2`;
* the `metav1.LabelSelector` object (`{matchLabels, matchExpressions}`) found in
  specs such as Deployments, NetworkPolicies and webhook configurations;
* the `?fieldSelector=` string (k8s.io/apimachinery/pkg/fields `ParseSelector`):
  `metadata.name=web,status.phase!=Running`.

Every malformed input raises a 400 BadRequest `StatusError`, so the HTTP layer can
return it to the client as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from vwproxy.kube.errors import StatusError, bad_request

__all__ = [
    "DOES_NOT_EXIST",
    "EQUALS",
    "EXISTS",
    "GREATER_THAN",
    "IN",
    "LESS_THAN",
    "NOT_EQUALS",
    "NOT_IN",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
]

# Label requirement operators. `==` is accepted on input but stored as `=`: the two
# mean the same thing, and one spelling keeps equality and the canonical form simple.
EXISTS: Final = "exists"
DOES_NOT_EXIST: Final = "!"
EQUALS: Final = "="
NOT_EQUALS: Final = "!="
IN: Final = "in"
NOT_IN: Final = "notin"
GREATER_THAN: Final = ">"
LESS_THAN: Final = "<"

# Position of each operator when requirements on the same key are ordered.
_OPERATOR_RANK: Final[Mapping[str, int]] = {
    EXISTS: 0,
    DOES_NOT_EXIST: 1,
    EQUALS: 2,
    NOT_EQUALS: 3,
    IN: 4,
    NOT_IN: 5,
    GREATER_THAN: 6,
    LESS_THAN: 7,
}

_NAME_MAX: Final = 63
_PREFIX_MAX: Final = 253
_VALUE_MAX: Final = 63
_NAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_LABEL: Final = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE: Final = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
# Go's strconv.ParseInt(s, 10, 64): an optional sign and ASCII digits, nothing else.
# Python's int() is far more lenient (spaces, underscores, non-ASCII digits).
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# Longest piece of user input echoed into an error message; a selector is a query
# parameter and can be arbitrarily long.
_QUOTE_MAX: Final = 200

# A label that cannot be both present and absent: the requirement pair that makes
# `LabelSelector.nothing()` an ordinary selector which still matches no object.
_NOTHING_KEY: Final = "vwproxy.dev/nothing"


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."


def _parse_int64(text: str) -> int | None:
    if not _INT_RE.fullmatch(text):
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key (a Kubernetes "qualified name"), or None."""
    problems: list[str] = []
    if key.count("/") > 1:
        problems.append("a key is an optional DNS subdomain prefix and a name, separated by a single '/'")
    else:
        prefix, slash, name = key.rpartition("/")
        if slash:
            if not prefix:
                problems.append("the prefix before '/' must not be empty")
            elif len(prefix) > _PREFIX_MAX:
                problems.append(f"the prefix must be no more than {_PREFIX_MAX} characters")
            elif not _DNS_SUBDOMAIN_RE.fullmatch(prefix):
                problems.append(
                    "the prefix must be a DNS subdomain: lowercase alphanumeric characters, '-' or '.', "
                    "starting and ending with an alphanumeric character (e.g. 'example.com')"
                )
        if not name:
            problems.append("the name part must not be empty")
        elif len(name) > _NAME_MAX:
            problems.append(f"the name part must be no more than {_NAME_MAX} characters")
        elif not _NAME_RE.fullmatch(name):
            problems.append(
                "the name part must consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character (e.g. 'MyName', 'my.name' or '123-abc')"
            )
    if not problems:
        return None
    return f'invalid label key "{_clip(key)}": ' + "; ".join(problems)


def _value_problem(key: str, value: str) -> str | None:
    """Why `value` is not a valid label value, or None. The empty value is valid."""
    if len(value) > _VALUE_MAX:
        why = f"must be no more than {_VALUE_MAX} characters"
    elif value and not _NAME_RE.fullmatch(value):
        why = (
            "must be empty or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'MyValue', 'my_value' or '12345')"
        )
    else:
        return None
    return f'invalid label value "{_clip(value)}" for key "{_clip(key)}": {why}'


def _requirement_problem(key: str, operator: str, values: tuple[str, ...]) -> str | None:
    """Why `key operator values` is not a valid requirement, or None."""
    problem = _key_problem(key)
    if problem:
        return problem
    if operator in (IN, NOT_IN):
        if not values:
            return f"invalid requirement on key \"{_clip(key)}\": for 'in', 'notin' operators, values set can't be empty"
    elif operator in (EQUALS, NOT_EQUALS):
        if len(values) != 1:
            return f'invalid requirement on key "{_clip(key)}": exact-match compatibility requires one single value'
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if values:
            return f'invalid requirement on key "{_clip(key)}": values set must be empty for exists and does not exist'
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            return f"invalid requirement on key \"{_clip(key)}\": for 'gt', 'lt' operators, exactly one value is required"
        if _parse_int64(values[0]) is None:
            return (
                f"invalid requirement on key \"{_clip(key)}\": for 'gt', 'lt' operators, "
                f'the value must be an integer, not "{_clip(values[0])}"'
            )
    else:
        return f'invalid requirement on key "{_clip(key)}": unknown operator "{_clip(operator)}"'
    for value in values:
        problem = _value_problem(key, value)
        if problem:
            return problem
    return None


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: `key`, an operator and the values it compares with.

    The constructor validates like `labels.NewRequirement` and raises a 400
    `StatusError` on a bad key, value or value count. `==` is stored as `=`, and the
    values of `in`/`notin` as a sorted set, so equal requirements compare equal.
    """

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        operator = EQUALS if self.operator == "==" else self.operator
        values = tuple(self.values)
        if operator in (IN, NOT_IN):
            values = tuple(sorted(set(values)))
        problem = _requirement_problem(self.key, operator, values)
        if problem:
            raise bad_request(problem)
        # The dataclass is frozen so that requirements can be hashed; normalising
        # the fields here is the one place they are ever written.
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "values", values)

    def sort_key(self) -> tuple[str, int, tuple[str, ...]]:
        """Order of requirements in the canonical form: key, then operator, then values."""
        return (self.key, _OPERATOR_RANK[self.operator], self.values)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object carrying `labels` satisfies this requirement."""
        op = self.operator
        present = self.key in labels
        if op == EXISTS:
            return present
        if op == DOES_NOT_EXIST:
            return not present
        if op in (NOT_EQUALS, NOT_IN):
            # Kubernetes reads `tier!=db` as "not labelled tier=db", so objects
            # without the label at all are kept.
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        actual = labels[self.key]
        if op in (EQUALS, IN):
            return actual in self.values
        # gt/lt: a label that is not an integer never matches, it is not an error,
        # because the selector is valid and only this object's label is odd.
        number = _parse_int64(actual)
        if number is None:
            return False
        bound = int(self.values[0])
        return number > bound if op == GREATER_THAN else number < bound

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        return f"{self.key}{self.operator}{self.values[0]}"


# ---------------------------------------------------------------------------
# Label selector string syntax


_END: Final = "end"
_IDENT: Final = "identifier"
# A run of whitespace, then either an operator/punctuation symbol or a word. Words
# stop at whitespace and at every symbol character, as in the apimachinery lexer;
# `!=` and `==` are tried before their one-character prefixes.
_TOKEN_RE: Final = re.compile(r"[ \t\r\n]*(?:(!=|==|[=!(),<>])|([^ \t\r\n=!(),<>]+))?")
_BINARY_OPERATORS: Final[Mapping[str, str]] = {
    "=": EQUALS,
    "==": EQUALS,
    "!=": NOT_EQUALS,
    "in": IN,
    "notin": NOT_IN,
    ">": GREATER_THAN,
    "<": LESS_THAN,
}


@dataclass(frozen=True)
class _Token:
    kind: str  # _END, _IDENT, "in", "notin", or the symbol itself
    text: str
    start: int
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        match = _TOKEN_RE.match(text, pos)
        # The pattern can always match the empty string, so `match` is never None.
        assert match is not None
        symbol, word = match.group(1), match.group(2)
        if symbol is not None:
            tokens.append(_Token(symbol, symbol, match.start(1), match.end(1)))
        elif word is not None:
            kind = word if word in ("in", "notin") else _IDENT
            tokens.append(_Token(kind, word, match.start(2), match.end(2)))
        else:
            tokens.append(_Token(_END, "", len(text), len(text)))
            return tokens
        pos = match.end()


def _found(token: _Token) -> str:
    return "end of string" if token.kind == _END else f"'{_clip(token.text)}'"


class _LabelParser:
    """Recursive-descent parser over the token list.

    `in` and `notin` are keywords only where an operator may stand; anywhere a key
    or value may stand they are plain words, so `in=notin` is a valid requirement.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.requirement_start = 0

    def peek(self, operator_position: bool = False) -> tuple[str, _Token]:
        token = self.tokens[self.pos]
        kind = token.kind
        if not operator_position and kind in ("in", "notin"):
            kind = _IDENT
        return kind, token

    def take(self, operator_position: bool = False) -> tuple[str, _Token]:
        kind, token = self.peek(operator_position)
        if token.kind != _END:
            self.pos += 1
        return kind, token

    def selector_error(self, token: _Token, expected: str) -> StatusError:
        return bad_request(f'found {_found(token)}, expected: {expected} (in "{_clip(self.text)}")')

    def requirement_error(self, token: _Token, expected: str) -> StatusError:
        so_far = self.text[self.requirement_start : token.end]
        return bad_request(
            f'unable to parse requirement: found {_found(token)}, expected: {expected} (in "{_clip(so_far)}")'
        )

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        kind, token = self.peek()
        if kind == _END:
            return requirements
        while True:
            if kind not in (_IDENT, "!"):
                expected = "identifier after ','" if requirements else "!, identifier, or end of string"
                raise self.selector_error(token, expected)
            requirements.append(self.requirement())
            kind, token = self.take()
            if kind == _END:
                return requirements
            if kind != ",":
                raise self.selector_error(token, "',' or end of string")
            kind, token = self.peek()

    def requirement(self) -> Requirement:
        kind, token = self.take()
        self.requirement_start = token.start
        negated = kind == "!"
        if negated:
            kind, token = self.take()
        if kind != _IDENT:
            raise self.requirement_error(token, "identifier")
        key = token.text
        problem = _key_problem(key)
        if problem:
            raise bad_request(f"unable to parse requirement: {problem}")
        # `!key` is complete on its own; whatever follows it is the caller's to
        # reject (`!a=b` fails there with "expected: ',' or end of string").
        if negated:
            return Requirement(key, DOES_NOT_EXIST)
        kind, token = self.peek()
        if kind in (_END, ","):
            return Requirement(key, EXISTS)
        kind, token = self.take(operator_position=True)
        operator = _BINARY_OPERATORS.get(kind)
        if operator is None:
            raise self.requirement_error(token, "in, notin, =, ==, !=, >, <")
        values = self.value_set() if operator in (IN, NOT_IN) else (self.single_value(),)
        problem = _requirement_problem(key, operator, values)
        if problem:
            raise bad_request(f"unable to parse requirement: {problem}")
        return Requirement(key, operator, values)

    def single_value(self) -> str:
        kind, token = self.peek()
        # `key=` (nothing before the next ',' or the end) means the empty value.
        if kind in (_END, ","):
            return ""
        kind, token = self.take()
        if kind != _IDENT:
            raise self.requirement_error(token, "identifier")
        return token.text

    def value_set(self) -> tuple[str, ...]:
        kind, token = self.take()
        if kind != "(":
            raise self.requirement_error(token, "'('")
        # Items are comma-separated and each may be empty: `()` is {""} and
        # `(,a)` is {"", "a"}, as in Kubernetes. An empty *set* cannot be written.
        values: list[str] = []
        while True:
            kind, token = self.peek()
            if kind == _IDENT:
                self.take()
                values.append(token.text)
            elif kind in (",", ")"):
                values.append("")
            else:
                raise self.requirement_error(token, "',', ')' or identifier")
            kind, token = self.take()
            if kind == ")":
                return tuple(values)
            if kind != ",":
                raise self.requirement_error(token, "',' or ')'")


# ---------------------------------------------------------------------------
# Label selector


class LabelSelector:
    """An immutable conjunction of label `Requirement`s.

    Build one with `parse` (query-string syntax), `from_dict` (`metav1.LabelSelector`),
    `everything()` or `nothing()`. Equality is structural over the normalised,
    de-duplicated requirements, and `str()` gives the canonical form, which `parse`
    reads back to an equal selector.
    """

    __slots__ = ("_requirements",)

    def __init__(self, requirements: Iterable[Requirement] = ()) -> None:
        self._requirements: tuple[Requirement, ...] = tuple(
            sorted(set(requirements), key=Requirement.sort_key)
        )

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse the `?labelSelector=` syntax; "" (or only whitespace) selects everything."""
        return cls(_LabelParser(text).parse())

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """Convert a `metav1.LabelSelector` like `metav1.LabelSelectorAsSelector`.

        A missing selector (None) matches nothing, while an empty one ({}) matches
        everything: that is what Kubernetes does, e.g. for a webhook's objectSelector.
        """
        if selector is None:
            return cls.nothing()
        if not isinstance(selector, Mapping):
            raise bad_request("invalid label selector: expected an object with matchLabels and/or matchExpressions")
        match_labels = selector.get("matchLabels") or {}
        match_expressions = selector.get("matchExpressions") or []
        if not isinstance(match_labels, Mapping):
            raise bad_request("invalid label selector: matchLabels must be an object of label keys to values")
        if not isinstance(match_expressions, (list, tuple)):
            raise bad_request("invalid label selector: matchExpressions must be a list")

        requirements: list[Requirement] = []
        for key, value in match_labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise bad_request(
                    f"invalid label selector: matchLabels: {_clip(repr(key))}: {_clip(repr(value))} "
                    "is not a string key and value"
                )
            requirements.append(_checked(f"matchLabels[{key}]", key, EQUALS, (value,)))

        operators = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}
        for index, expression in enumerate(match_expressions):
            where = f"matchExpressions[{index}]"
            if not isinstance(expression, Mapping):
                raise bad_request(f"invalid label selector: {where} must be an object")
            key = expression.get("key", "")
            raw_operator = expression.get("operator", "")
            values = expression.get("values") or []
            if not isinstance(key, str):
                raise bad_request(f"invalid label selector: {where}.key must be a string")
            operator = operators.get(raw_operator) if isinstance(raw_operator, str) else None
            if operator is None:
                raise bad_request(
                    f'invalid label selector: {where}.operator: "{_clip(str(raw_operator))}" '
                    "is not a valid label selector operator (In, NotIn, Exists, DoesNotExist)"
                )
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
                raise bad_request(f"invalid label selector: {where}.values must be a list of strings")
            requirements.append(_checked(where, key, operator, tuple(values)))
        return cls(requirements)

    @classmethod
    def everything(cls) -> LabelSelector:
        """The selector with no requirements, which matches every object."""
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        """A selector that matches no object (what a nil `metav1.LabelSelector` means).

        It is a pair of contradictory requirements rather than a special case, so its
        string form, forwarded to a real API server, also selects nothing, and parses
        back to an equal selector.
        """
        return cls([Requirement(_NOTHING_KEY, EXISTS), Requirement(_NOTHING_KEY, DOES_NOT_EXIST)])

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        """The requirements in canonical order."""
        return self._requirements

    @property
    def empty(self) -> bool:
        """True when there are no requirements, i.e. the selector matches everything."""
        return not self._requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object whose `metadata.labels` are `labels` is selected."""
        present: Mapping[str, str] = labels if labels is not None else {}
        return all(requirement.matches(present) for requirement in self._requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self._requirements)

    def __repr__(self) -> str:
        return f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return self._requirements == other._requirements

    def __hash__(self) -> int:
        return hash(self._requirements)


def _checked(where: str, key: str, operator: str, values: tuple[str, ...]) -> Requirement:
    problem = _requirement_problem(key, operator, values)
    if problem:
        raise bad_request(f"invalid label selector: {_clip(where)}: {problem}")
    return Requirement(key, operator, values)


# ---------------------------------------------------------------------------
# Field selector


_FIELD_OPERATORS: Final = ("=", "!=")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not escaped with a backslash; escapes are kept."""
    terms: list[str] = []
    start = 0
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """Split `term` at its first operator into (field, operator, raw value).

    Field names cannot be escaped, so the first `=`, `==` or `!=` is the operator
    wherever it is; `==` is reported as `=`.
    """
    for index, char in enumerate(term):
        if char == "!" and term.startswith("=", index + 1):
            return term[:index], "!=", term[index + 2 :]
        if char == "=":
            width = 2 if term.startswith("=", index + 1) else 1
            return term[:index], "=", term[index + width :]
    return None


def _unescape(raw: str, term: str) -> str:
    out: list[str] = []
    escaped = False
    for char in raw:
        if escaped:
            if char not in "\\,=":
                raise bad_request(
                    f"invalid field selector: invalid escape sequence '\\{char}' in '{_clip(term)}' "
                    "(only \\\\, \\, and \\= are recognised)"
                )
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            # A bare ',' cannot reach here (it splits terms), but a bare '=' in the
            # value is ambiguous with the operator and Kubernetes refuses it.
            raise bad_request(f"invalid field selector: unescaped '{char}' in the value of '{_clip(term)}'")
        else:
            out.append(char)
    if escaped:
        raise bad_request(f"invalid field selector: the value of '{_clip(term)}' ends with a lone '\\'")
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


class FieldSelector:
    """An immutable conjunction of `field=value` / `field!=value` terms.

    Field names are not checked here: which fields a resource supports is the
    caller's business. A field missing from the object's field set compares as "".
    """

    __slots__ = ("_terms",)

    def __init__(self, terms: Iterable[tuple[str, str, str]] = ()) -> None:
        normalised: set[tuple[str, str, str]] = set()
        for field_name, operator, value in terms:
            operator = "=" if operator == "==" else operator
            if operator not in _FIELD_OPERATORS:
                raise bad_request(f"invalid field selector: unknown operator '{_clip(operator)}'")
            normalised.add((field_name, operator, value))
        self._terms: tuple[tuple[str, str, str], ...] = tuple(sorted(normalised))

    @classmethod
    def parse(cls, text: str) -> FieldSelector:
        """Parse the `?fieldSelector=` syntax; "" selects everything, empty terms are skipped."""
        terms: list[tuple[str, str, str]] = []
        for term in _split_terms(text):
            if not term:
                continue
            split = _split_term(term)
            if split is None:
                raise bad_request(f"invalid selector: '{_clip(text)}'; can't understand '{_clip(term)}'")
            field_name, operator, raw = split
            terms.append((field_name, operator, _unescape(raw, term)))
        return cls(terms)

    @classmethod
    def everything(cls) -> FieldSelector:
        """The selector with no terms, which matches every object."""
        return cls()

    @property
    def empty(self) -> bool:
        """True when there are no terms, i.e. the selector matches everything."""
        return not self._terms

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether an object whose selectable fields are `fields` is selected."""
        for field_name, operator, value in self._terms:
            equal = fields.get(field_name, "") == value
            if equal != (operator == "="):
                return False
        return True

    def field_names(self) -> set[str]:
        """Every field the selector mentions, for checking them against what is supported."""
        return {field_name for field_name, _, _ in self._terms}

    def exact(self, field: str) -> str | None:
        """The value `field` must equal, if some term requires one, else None.

        Lets a caller turn `metadata.name=x` into a direct lookup. With conflicting
        terms (`a=x,a=y`) one of them is returned; `matches` still has to be applied.
        """
        for field_name, operator, value in self._terms:
            if field_name == field and operator == "=":
                return value
        return None

    def requirements(self) -> list[tuple[str, str, str]]:
        """The terms as (field, "=" or "!=", unescaped value), in canonical order."""
        return list(self._terms)

    def __str__(self) -> str:
        return ",".join(f"{name}{operator}{_escape(value)}" for name, operator, value in self._terms)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self._terms == other._terms

    def __hash__(self) -> int:
        return hash(self._terms)
