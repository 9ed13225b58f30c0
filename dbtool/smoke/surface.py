"""The RPC surface of a schema revision: which functions PostgREST exposes in `public`, with
their input argument names. Derived from the revisions' own SQL (nothing per revision is
written here), and compared with what a live project's PostgREST describes, because the
version table (`chat_migrations`) is not reachable through the API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Surface = dict[str, frozenset[str]]

_CREATE = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?function\s+public\.\"?(\w+)\"?\s*\(", re.I)
_DROP = re.compile(r"\bdrop\s+function\s+(?:if\s+exists\s+)?public\.\"?(\w+)\"?", re.I)
_MODES = {"in", "out", "inout", "variadic"}


def _arguments(sql: str, start: int) -> list[str]:
    """The argument list that opens at `start` (just after the parenthesis), split on top-level commas."""
    depth, i, parts, current = 1, start, [], []
    while i < len(sql) and depth:
        ch = sql[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                break
        elif ch == "'":
            end = sql.index("'", i + 1)
            current.append(sql[i:end + 1])
            i = end + 1
            continue
        if ch == "," and depth == 1:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _input_names(args: list[str]) -> frozenset[str]:
    names = set()
    for arg in args:
        words = arg.split()
        mode = words[0].lower() if words[0].lower() in _MODES else "in"
        if mode == "out":
            continue
        words = words[1:] if words[0].lower() in _MODES else words
        if len(words) > 1:  # a name followed by a type; an unnamed argument has the type only
            names.add(words[0].strip('"'))
    return frozenset(names)


def apply(surface: Mapping[str, frozenset[str]], sql: str) -> Surface:
    """The surface after running `sql` (creates and drops of public functions, in order)."""
    out = dict(surface)
    events = sorted([(m.start(), "create", m) for m in _CREATE.finditer(sql)]
                    + [(m.start(), "drop", m) for m in _DROP.finditer(sql)], key=lambda e: e[0])
    for _, kind, match in events:
        name = match.group(1)
        if kind == "drop":
            out.pop(name, None)
        else:
            out[name] = _input_names(_arguments(sql, match.end()))
    return out


def by_revision(revisions: Iterable[tuple[str, str]]) -> list[tuple[str, Surface]]:
    """(revision, surface after it) for each (revision, upgrade SQL), oldest first."""
    surface: Surface = {}
    out = []
    for revision, sql in revisions:
        surface = apply(surface, sql)
        out.append((revision, surface))
    return out


def from_openapi(document: Mapping[str, object]) -> Surface:
    """The functions PostgREST's OpenAPI description lists under /rpc/, with their arguments."""
    paths = document.get("paths")
    out: Surface = {}
    if not isinstance(paths, dict):
        return out
    for path, item in paths.items():
        if not isinstance(path, str) or not path.startswith("/rpc/"):
            continue
        names: set[str] = set()
        for operation in (item or {}).values() if isinstance(item, dict) else ():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else ():
                schema = parameter.get("schema") if isinstance(parameter, dict) else None
                props = schema.get("properties") if isinstance(schema, dict) else None
                if isinstance(props, dict):
                    names.update(props)
        out[path[len("/rpc/"):]] = frozenset(names)
    return out


@dataclass(frozen=True)
class Comparison:
    matches_head: bool
    missing: list[str]
    different: list[str]
    matching_revisions: list[str]
    extra: list[str]

    def explain(self, head: str) -> str:
        parts = []
        if self.missing:
            parts.append(f"it lacks {', '.join(self.missing)}")
        if self.different:
            parts.append(f"{', '.join(self.different)} take other arguments")
        if self.extra:
            parts.append(f"it has {', '.join(self.extra)}, which this package's head does not")
        where = (f"its functions match revision {', '.join(self.matching_revisions)}" if self.matching_revisions
                 else "its functions match no revision of this package")
        return f"{'; '.join(parts)} ({where}, this package's head is {head})"


def compare(project: Mapping[str, frozenset[str]], revisions: list[tuple[str, Surface]]) -> Comparison:
    """Compare a project's surface with the head's, over the functions any revision ever defined
    (other functions in `public` belong to the application and are ignored)."""
    known = {name for _, s in revisions for name in s}
    seen = {name: args for name, args in project.items() if name in known}
    head = revisions[-1][1]
    missing = sorted(set(head) - set(seen))
    extra = sorted(set(seen) - set(head))
    different = sorted(n for n in set(head) & set(seen) if head[n] != seen[n])
    matching = [rev for rev, s in revisions if s == seen]
    return Comparison(not (missing or extra or different), missing, different, matching, extra)
