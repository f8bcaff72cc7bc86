"""The documentation says what the code does (docs that are true).

The README's Python example runs as written; and every command line, flag, endpoint,
environment variable, make target and source file that README.md and docs/*.md name exists in
the code. These checks are in-process and load no model (but the Python example), so a doc
that goes stale fails here, not in a new user's hands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SRC = ROOT / "src" / "bildwerk"


def test_readme_python_example_runs(tmp_path):
    text = README.read_text("utf-8")
    section = text[text.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "BILDWERK_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "de" in out.stdout.split()[-1]
    assert len(list((tmp_path / "outputs/python").glob("*.png"))) == 2


# -- reading the docs ---------------------------------------------------------------------------

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def _blocks(text: str) -> list[str]:
    return _FENCE.findall(text)


def _spans(text: str) -> list[str]:
    """Inline code spans, outside fenced blocks."""
    return _SPAN.findall(_FENCE.sub("", text))


def _shell_lines(text: str) -> list[str]:
    """Lines of the fenced blocks, continuations joined, comments cut."""
    lines = []
    for block in _blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(re.split(r"(?:^|\s)#(?:\s|$)", line)[0])
    return lines


def _where(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


# -- the command line ---------------------------------------------------------------------------

_CALL = re.compile(r"(?:^|[\s;&|(]|/)bildwerk((?:\s+\S.*)?)$")


def _cli_tree():
    """{command path: (option names, subcommand names)} of the real CLI."""
    import typer

    from bildwerk.cli import app

    tree: dict[tuple[str, ...], tuple[set[str], set[str]]] = {}

    def walk(cmd, path):
        opts = set()
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option":
                opts.update(p.opts)
                opts.update(p.secondary_opts)
        subs = getattr(cmd, "commands", None) or {}
        tree[path] = (opts, set(subs))
        for name, sub in subs.items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return tree


def _cli_calls(doc: Path) -> list[str]:
    """Every `bildwerk ...` command line the doc shows: in its code blocks and code spans."""
    text = doc.read_text("utf-8")
    calls = []
    for line in [*_shell_lines(text), *_spans(text)]:
        if "python" in line or line.strip().startswith(("from ", "import ")):
            continue
        m = _CALL.search(line.strip())
        if m:
            calls.append("bildwerk" + m.group(1))
    return calls


def _check_call(call: str, tree) -> str | None:
    try:
        tokens = shlex.split(call.replace("…", "x"))[1:]
    except ValueError:
        tokens = call.split()[1:]
    path: tuple[str, ...] = ()
    for token in tokens:
        if token in ("|", ">", "&&", ";") or token.startswith((">", "|")):
            break
        opts, subs = tree[path]
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            if name not in opts and name not in tree[()][0] and name != "--help":
                return f"`{call}`: `bildwerk {' '.join(path)}` has no option {name}"
        elif subs:
            if token.isupper() or token.startswith(("$", "<", "{")):  # a placeholder: COMMAND
                return None
            if token not in subs:
                return f"`{call}`: `bildwerk {' '.join(path)}` has no command {token!r}"
            path = (*path, token)
    return None


def test_every_command_line_in_the_docs_exists_with_its_flags():
    tree = _cli_tree()
    problems, seen = [], 0
    for doc in DOCS:
        for call in _cli_calls(doc):
            seen += 1
            if (problem := _check_call(call, tree)) is not None:
                problems.append(f"{_where(doc)}: {problem}")
    assert seen > 40  # the reader still finds the command lines
    assert not problems, "\n".join(problems)


def test_every_flag_the_docs_name_is_an_option_of_some_command():
    """A flag named alone (`--mask-blur`, `--width/--height`) is an option of a command (or of
    a script in bench/ or tools/, which docs/benchmarks.md names)."""
    tree = _cli_tree()
    every = set().union(*(opts for opts, _ in tree.values()))
    every |= set(re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", _code_text("bench", "tools")))
    problems = []
    for doc in DOCS:
        for span in _spans(doc.read_text("utf-8")):
            if not span.startswith("--"):
                continue
            for flag in re.findall(r"(?:^|/)(--[a-z][a-z0-9-]*)", span.split()[0]):
                if flag not in every:
                    problems.append(f"{_where(doc)}: `{span}`: no command has {flag}")
    assert not problems, "\n".join(problems)


# -- the service's endpoints --------------------------------------------------------------------

_PATH = re.compile(
    r"(?:\b(?P<methods>(?:GET|POST|PUT|DELETE)(?:/(?:GET|POST|PUT|DELETE))*)\s+)?"
    r"(?<![\w.])(?:localhost:\d+|127\.0\.0\.1:\d+|\$\w+)?"
    r"(?P<path>/(?:api/v1|sdapi/v1|v1/images)(?:/[^\s`'\"?),|\\]*)?|/(?:health|ready|metrics|docs|openapi\.json)\b)"
)
# The placeholders the docs write for path parameters: {id}, JOB_ID, $ID, ID.
_PLACEHOLDER = re.compile(r"^(?:\{[^}]*\}|\$\w+|[A-Z][A-Z_]*)")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from bildwerk.server.app import create_app
    from bildwerk.server.settings import ServerSettings

    store = tmp_path_factory.mktemp("docs-app") / "store"
    return create_app(ServerSettings(store=store), service=object())


def _route_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def _doc_path(path: str) -> str:
    """A concrete path for a documented one: each placeholder becomes a sample value."""
    segments = []
    for seg in path.rstrip(".:;/").split("/"):
        m = _PLACEHOLDER.match(seg)
        segments.append("x1" + seg[m.end():] if m else seg)
    return "/".join(segments)


def test_every_endpoint_the_docs_name_is_served(app):
    from fastapi.testclient import TestClient

    routes = {}
    for path, item in app.openapi()["paths"].items():
        routes[_route_regex(path)] = {m.upper() for m in item if m in ("get", "post", "put", "delete")}
    client = TestClient(app, base_url="http://127.0.0.1:7860")
    problems, seen = [], 0
    for doc in DOCS:
        text = doc.read_text("utf-8")
        for chunk in [*_spans(text), *_shell_lines(text)]:
            for m in _PATH.finditer(chunk):
                seen += 1
                path, methods = _doc_path(m.group("path")), m.group("methods")
                served = [ms for rx, ms in routes.items() if rx.match(path)]
                if not served and path in ("/api/v1", "/sdapi/v1", "/v1/images"):  # a surface's name
                    continue
                if not served:  # outside the OpenAPI document: /docs, /openapi.json
                    if client.get(path).status_code != 200:
                        problems.append(f"{_where(doc)}: {m.group(0)!r}: no such endpoint")
                    continue
                for method in (methods or "").split("/") if methods else []:
                    if not any(method in ms for ms in served):
                        problems.append(f"{_where(doc)}: {m.group(0)!r}: {path} does not answer {method}")
    assert seen > 80
    assert not problems, "\n".join(problems)


def _unknown_fields(value, schema, doc, where=""):
    """Keys of ``value`` that ``schema`` (an OpenAPI schema, $refs resolved in ``doc``) has not."""
    if "$ref" in schema:
        return _unknown_fields(value, doc["components"]["schemas"][schema["$ref"].split("/")[-1]], doc, where)
    if "anyOf" in schema:
        options = [_unknown_fields(value, s, doc, where) for s in schema["anyOf"] if s.get("type") != "null"]
        return min(options, key=len) if options else []
    if not isinstance(value, dict) or "properties" not in schema:
        return []  # a value, or a mapping of free keys (a pool's mix)
    unknown = []
    for key, sub in value.items():
        if key not in schema["properties"]:
            unknown.append(f"{where}{key}")
        else:
            unknown += _unknown_fields(sub, schema["properties"][key], doc, f"{where}{key}.")
    return unknown


def test_every_json_body_a_curl_example_posts_has_only_fields_its_endpoint_takes(app):
    import json

    doc, problems, seen = app.openapi(), [], 0
    for page in DOCS:
        for line in _shell_lines(page.read_text("utf-8")):
            body = re.search(r"\s(?:-d|--data)\s+'(\{.*?\})'", line)
            url = _PATH.search(line)
            if not (body and url and line.lstrip().startswith("curl")):
                continue
            seen += 1
            path = _doc_path(url.group("path"))
            [template] = [t for t in doc["paths"] if _route_regex(t).match(path)]
            content = doc["paths"][template]["post"]["requestBody"]["content"]["application/json"]
            unknown = _unknown_fields(json.loads(body.group(1)), content["schema"], doc)
            problems += [f"{_where(page)}: POST {template} takes no field {u}" for u in unknown]
    assert seen >= 2
    assert not problems, "\n".join(problems)


def test_the_api_docs_page_works_offline_and_redoc_is_not_served(app):
    """/docs is Swagger UI with its assets from the server (docs/service.md); no ReDoc."""
    from fastapi.testclient import TestClient

    client = TestClient(app, base_url="http://127.0.0.1:7860")
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert assets and all(a.startswith("/") for a in assets), assets  # nothing from a CDN
    assert all(client.get(a).status_code == 200 for a in assets)
    assert client.get("/redoc").status_code == 404


# -- environment, make targets, files ------------------------------------------------------------

_VAR = re.compile(r"\bBILDWERK_[A-Z0-9_]*[A-Z0-9]\b")
# Names in the code that are not environment variables.
_NOT_ENV = {"BILDWERK_CONFIG"}  # the model card's file name, bildwerk.json


def _code_text(*folders: str) -> str:
    return "\n".join(p.read_text("utf-8") for f in folders for p in (ROOT / f).rglob("*.py"))


def test_every_environment_variable_the_docs_name_exists():
    code = set(_VAR.findall(_code_text("src", "tests", "bench")))
    problems = [f"{_where(doc)}: {v} is read nowhere" for doc in DOCS
                for v in sorted(set(_VAR.findall(doc.read_text("utf-8")))) if v not in code]
    assert not problems, "\n".join(problems)


def test_every_environment_variable_the_code_reads_is_documented():
    documented = set().union(*(_VAR.findall(doc.read_text("utf-8")) for doc in DOCS))
    read = set(re.findall(r"[\"'](BILDWERK_[A-Z0-9_]+)[\"']", _code_text("src"))) - _NOT_ENV
    assert read - documented == set(), "not in README.md or docs/: " + ", ".join(sorted(read - documented))


def test_every_make_target_the_docs_name_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text("utf-8"), re.M))
    problems = []
    for doc in DOCS:
        text = doc.read_text("utf-8")
        for chunk in [*_spans(text), *_shell_lines(text)]:
            for target in re.findall(r"(?:^|[\s;&(])make\s+([a-z][\w-]*)", chunk):
                if target not in targets:
                    problems.append(f"{_where(doc)}: `make {target}` is no target of the Makefile")
    assert not problems, "\n".join(problems)


def test_every_source_file_and_doc_the_docs_name_exists():
    """`server/openapi.py`, `tests/server/test_hostile_corpus.py`, `data/lexicon/enhance.tsv`,
    [ui.md](ui.md): relative to the doc, the repository, src/, src/bildwerk/ or its data
    folders (docs/pools.md's table of `bildwerk/data/pool/`)."""
    problems = []
    for doc in DOCS:
        text = doc.read_text("utf-8")
        # Files a run writes (report.md, dataset_card.md) are named without a folder.
        named = [s for s in _spans(text) if re.fullmatch(r"\w[\w./*-]*/[\w./*-]*\.(?:py|md|tsv|json|ipynb|toml)", s)]
        named += re.findall(r"\]\(([^)#:\s]+\.md)(?:#[^)]*)?\)", text)  # [ui.md](ui.md)
        for name in named:
            bases = [doc.parent, ROOT, ROOT / "src", SRC, SRC / "data", SRC / "data" / "pool"]
            if not any(list(base.glob(name)) for base in bases):
                problems.append(f"{_where(doc)}: `{name}` does not exist")
    assert not problems, "\n".join(problems)
