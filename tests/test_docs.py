"""The README and docs/ stay true: their links resolve, the commands in their code blocks are ones
the project has, and they speak of the product, not of how it was made."""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

import benchmarks.conftest as bench_conftest
from model import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in DOCS]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
SHELL = {"bash", "sh", "shell", "console"}
# Plain tools a command line may use besides the project's own.
SHELL_TOOLS = {"cd", "export", "git", "nvidia-smi", "source"}
# How a page would speak of the way it was made rather than of the product.
PROCESS_TALK = re.compile(
    r"\b(?:leases?|leased|lent)\b"
    r"|\b(?:first|second|third|fourth|fifth|sixth|this|that|previous|next|earlier|later|work|device)\s+sessions?\b"
    r"|\bsessions?\s+\d"
    r"|\bissues?\s*#?\d+"
    r"|(?<![\w/&])#\d+\b",
    re.I)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{doc.name}: broken links:\n" + "\n".join(broken)


def test_link_check_sees_links_and_anchors(tmp_path):
    """The checks above can fail: a page with a dead file link and a dead anchor."""
    page = tmp_path / "page.md"
    page.write_text("# A heading, with `code`\n[ok](#a-heading-with-code) [bad](#nothing) [gone](missing.md)\n")
    assert links(page) == ["#a-heading-with-code", "#nothing", "missing.md"]
    assert anchors(page) == {"a-heading-with-code"}


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


class _OptionNames:
    """Stands in for pytest's parser to read the option names a conftest declares."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def getgroup(self, *args, **kwargs):
        return self

    def addoption(self, *names, **kwargs) -> None:
        self.names.update(names)

    def addini(self, *args, **kwargs) -> None:
        pass


@pytest.fixture(scope="module")
def pytest_options(pytestconfig) -> set[str]:
    """Every option `pytest tests` or `pytest benchmarks` accepts: pytest's, its plugins', the root
    and tests conftests' (registered in this run) and benchmarks/conftest.py's."""
    parser = pytestconfig._parser  # pytest's own parser, built with every plugin's options
    argparser = parser.optparser if hasattr(parser, "optparser") else parser._getparser()  # pytest 9 / 8
    names = set(argparser._option_string_actions)
    extra = _OptionNames()
    bench_conftest.pytest_addoption(extra)
    return names | extra.names


def shell_commands(doc: Path) -> list[str]:
    """Each command line of the page's shell code blocks (continuations joined)."""
    lines = []
    for lang, body in FENCE.findall(doc.read_text()):
        if lang in SHELL:
            lines += [ln for ln in body.replace("\\\n", " ").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return lines


def segments(line: str) -> list[list[str]]:
    """The simple commands of a line, split on && || ; and |, each without leading VAR=value."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    out, current = [], []
    for token in lexer:
        if set(token) <= set(";&|"):
            out.append(current)
            current = []
        else:
            current.append(token)
    out.append(current)
    result = []
    for words in out:
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            words = words[1:]
        if words:
            result.append(words)
    return result


def check_pytest(args: list[str], known: set[str]) -> list[str]:
    problems = []
    for word in args:
        if word.startswith("--"):
            if word.split("=", 1)[0] not in known:
                problems.append(f"pytest has no option {word.split('=', 1)[0]}")
        elif word.startswith("-") and len(word) > 1:
            if word[:2] not in known:
                problems.append(f"pytest has no option {word[:2]}")
        elif re.match(r"^(tests|benchmarks)(/|$)", word) and not (ROOT / word.split("::")[0]).exists():
            problems.append(f"no test path {word}")
    return problems


def check_model_cli(args: list[str]) -> list[str]:
    try:
        cli.build_parser().parse_args(args)
    except SystemExit:
        return [f"`python -m model {' '.join(args)}` is refused by model/cli.py's parser"]
    return []


def check_command(words: list[str], known: set[str]) -> list[str]:
    prog, args = words[0], words[1:]
    base = prog.rsplit("/", 1)[-1]
    if base == "make":
        problems = [f"no make target {t}" for t in args if "=" not in t and not t.startswith("-")
                    and t not in make_targets()]
        # ARGS go to the target's command: `compare` to the CLI, `test` and `bench` to pytest.
        make_args = [a.split("=", 1)[1] for a in args if a.startswith("ARGS=")]
        for extra in make_args:
            if "compare" in args:
                problems += check_model_cli(["compare", *shlex.split(extra)])
            if "test" in args or "bench" in args:
                problems += check_pytest(shlex.split(extra), known)
        return problems
    if base == "pytest":
        return check_pytest(args, known)
    if re.fullmatch(r"python3?(\.\d+)?", base):
        if args[:1] == ["-m"] and len(args) > 1:
            module, rest = args[1], args[2:]
            if module == "model":
                return check_model_cli(rest)
            if module == "pytest":
                return check_pytest(rest, known)
            if module in {"venv", "pip"}:
                return check_command([module, *rest], known)
            if module.startswith("model.") and importlib.util.find_spec(module) is not None:
                return []
            return [f"no module {module} in the project"]
        return [] if args and (ROOT / args[0]).is_file() else [f"no script {args[:1]}"]
    if base == "pip":
        return [f"no requirements file {r}" for flag, r in zip(args, args[1:]) if flag == "-r" and not (ROOT / r).is_file()]
    if base == "venv":
        return []
    if base in {"bash", "sh"}:
        return [] if args and (ROOT / args[0]).is_file() else [f"no script {args[:1]}"]
    if "/" in prog:
        return [] if (ROOT / prog).is_file() else [f"no script {prog}"]
    if prog in SHELL_TOOLS:
        return []
    return [f"unknown command {prog}"]


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_command_in_a_code_block_exists(doc, pytest_options):
    problems = [f"{line.strip()}\n    {p}" for line in shell_commands(doc) for words in segments(line)
                for p in check_command(words, pytest_options)]
    assert not problems, f"{doc.name}: commands the project does not have:\n" + "\n".join(problems)


@pytest.mark.parametrize("line, expected", [
    ("make nonsense", "no make target nonsense"),
    ("make compare ARGS=\"--backends nowhere\"", "refused by model/cli.py"),
    ("python -m model frobnicate", "refused by model/cli.py"),
    (".venv/bin/python -m pytest tests --no-such-option", "pytest has no option --no-such-option"),
    ("pytest tests/test_nothing_here.py -q", "no test path tests/test_nothing_here.py"),
    ("FOO=1 bash .ci/nothing", "no script ['.ci/nothing']"),
    ("tools/nothing && make test", "no script tools/nothing"),
    ("python -m model.nothing", "no module model.nothing"),
    ("frobnicate --all", "unknown command frobnicate"),
])
def test_command_check_fails_on_what_the_project_lacks(line, expected, pytest_options):
    problems = [p for words in segments(line) for p in check_command(words, pytest_options)]
    assert any(expected in p for p in problems), problems


def test_command_check_accepts_the_projects_commands(pytest_options):
    for line in ["make compare ARGS=\"--model resnet18 --batch-sizes 1,32\"", "bash .ci/run",
                 "HYPOTHESIS_PROFILE=dev .venv/bin/python -m pytest benchmarks --bench-time 0.1 -k bs1 -n 2",
                 "python3 -m venv .venv && .venv/bin/pip install -r requirements-gpu.txt"]:
        assert [p for words in segments(line) for p in check_command(words, pytest_options)] == [], line


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_docs_speak_of_the_product_not_of_how_it_was_made(doc):
    found = [f"line {n}: {m.group(0)!r}" for n, line in enumerate(doc.read_text().splitlines(), 1)
             for m in PROCESS_TALK.finditer(line)]
    assert not found, f"{doc.name} mentions sessions, leases or issue numbers:\n" + "\n".join(found)


@pytest.mark.parametrize("text", ["the fifth session measured", "one lease of the GPU", "see issue 12",
                                  "fixed in #14", "on the lent machine", "session 3 ran"])
def test_process_talk_is_caught(text):
    assert PROCESS_TALK.search(text)


@pytest.mark.parametrize("text", ["an ONNX Runtime session that fell back to the CPU", "a pytest session",
                                  "the batch-1 engine", "[link](#verifying-on-a-gpu)"])
def test_product_words_pass(text):
    assert not PROCESS_TALK.search(text)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it at most 200 and move detail to docs/"
