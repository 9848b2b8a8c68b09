"""The README and docs/ cannot go stale: their links resolve and their examples are checked.

The convention, for README.md and docs/*.md:

- A fenced ``console`` block holds commands (``$ `` lines, ``\\`` continues a line) and, under
  each, what it prints. A fenced ``sh`` block holds commands only. Every ``python -m ecgcap.X``
  command in them is parsed by ``X.build_parser()`` (a renamed or removed option fails), and so
  is every inline ``python -m ecgcap.X ...`` code span.
- A ``console`` block with the marker ``<!-- doctest: run -->`` on the line before it is run,
  command by command, in a subprocess (in a scratch folder holding ``examples/`` and
  ``models/``, ``../shared/data/NAME`` replaced by the real dataset), and its output checked
  against what the block shows: a ``...`` line stands for any lines, a number may differ by
  0.5% or by 5 in its last shown digit (1 for a whole number), everything else must be as
  shown (runs of spaces aside). Only quick
  commands with the shipped models are marked so; training is only parsed.
- A fenced ``python`` block is run (``<!-- doctest: compile -->``: only compiled, with its
  ``from ecgcap... import`` names checked; ``<!-- doctest: skip -->``: left alone). A ``text``
  block right after it is what it prints, checked as above.
- Indented code blocks and fences of other kinds are not checked (synopses, layouts).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import real_dataset

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*DOCS, *sorted((ROOT / "models").glob("*.md")), ROOT / "examples" / "README.md"]
DATA_PREFIX = "../shared/data/"
MARKER_RE = re.compile(r"^<!--\s*doctest:\s*(run|compile|skip)\b.*-->\s*$")


# ---------------------------------------------------------------------------------------------
# reading the Markdown


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    marker: str | None = None
    output: str | None = None  # python blocks: the text block that follows

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass
class Command:
    block: Block
    line: str  # the command, continuations joined
    expected: list[str] = field(default_factory=list)


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the doctest marker just before it."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        start, close = i, fence.group(1)
        i += 1
        while i < len(lines) and not lines[i].startswith(close):
            i += 1
        prev = next((x for x in reversed(lines[:start]) if x.strip()), "")
        marker = MARKER_RE.match(prev)
        blocks.append(Block(path, start + 1, fence.group(2), "\n".join(lines[start + 1:i]),
                            marker.group(1) if marker else None))
        i += 1
    for block, nxt in zip(blocks, blocks[1:], strict=False):
        between = lines[block.line + block.text.count("\n") + 2:nxt.line - 1]
        if (block.info == "python" and nxt.info == "text"
                and all(not x.strip() for x in between)):
            block.output = nxt.text
    return blocks


def prose(path: Path) -> str:
    """``path`` without its fenced and indented code blocks."""
    text = re.sub(r"(?ms)^(```+|~~~+).*?^\1[^\n]*$", "", path.read_text())
    return "\n".join(x for x in text.splitlines() if not x.startswith("    "))


def commands(block: Block) -> list[Command]:
    """The commands of a ``console`` or ``sh`` block, with the output shown under each."""
    found: list[Command] = []
    pending = ""
    for raw in block.text.splitlines():
        if pending:
            pending += " " + raw.strip()
        elif block.info == "console" and raw.startswith("$ "):
            pending = raw[2:].strip()
        elif block.info == "sh" and raw.strip() and not raw.lstrip().startswith("#"):
            pending = raw.strip()
        elif found and block.info == "console":
            found[-1].expected.append(raw)
            continue
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
        elif _complete(pending):
            found.append(Command(block, pending))
            pending = ""
    return found


def _complete(line: str) -> bool:
    """Whether ``line`` is a whole shell command (no quote left open)."""
    try:
        shlex.split(line)
    except ValueError:
        return False
    return True


def ecgcap_invocations(command: str) -> list[tuple[str, list[str]]]:
    """``(module, args)`` for each ``python -m ecgcap.X`` in a shell command line."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    found, segment = [], []
    for token in [*tokens, ";"]:
        if token in ("|", "||", "&&", ";", "&"):
            while segment and re.match(r"^[A-Za-z_]\w*=", segment[0]):
                segment.pop(0)  # VAR=value before the command
            if segment[:1] == ["/usr/bin/time"]:
                segment.pop(0)
            if (len(segment) >= 3 and segment[0] in ("python", "python3") and segment[1] == "-m"
                    and re.fullmatch(r"ecgcap\.[a-z_]+", segment[2])):  # not ecgcap.COMMAND
                found.append((segment[2], segment[3:]))
            segment = []
        else:
            segment.append(token)
    return found


def inline_commands(path: Path) -> list[str]:
    """Inline code spans holding a ``python -m ecgcap.X ...`` command (spans may wrap lines);
    a command's bare name with an option (`caption --attention`) is prose, not a command."""
    spans = (" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose(path)))
    return [s for s in spans if re.search(r"python -m ecgcap\.[a-z_]+\b", s)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]{2,}|[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in prose(path).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(path: Path) -> list[str]:
    return re.findall(r"\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)", prose(path))


# ---------------------------------------------------------------------------------------------
# comparing what a doc shows with what was printed

NUMBER_RE = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def _parts(line: str) -> tuple[list[str], list[str]]:
    texts = [re.sub(r" +", " ", t).strip(" ") for t in NUMBER_RE.split(line)]
    return texts, NUMBER_RE.findall(line)


def line_matches(shown: str, printed: str) -> bool:
    shown_text, shown_numbers = _parts(shown)
    printed_text, printed_numbers = _parts(printed)
    if shown_text != printed_text:
        return False
    for s, p in zip(shown_numbers, printed_numbers, strict=True):
        want, got = float(s), float(p)
        mantissa, _, exponent = s.lower().partition("e")
        step = 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))
        if abs(want - got) > max(5 * step if "." in mantissa else 1.0, 0.005 * abs(want)):
            return False
    return True


def lines_match(shown: list[str], printed: list[str]) -> bool:
    """``shown`` against ``printed``, a ``...`` line standing for any number of lines."""
    if not shown:
        return not printed
    if shown[0].strip() == "...":
        return any(lines_match(shown[1:], printed[k:]) for k in range(len(printed) + 1))
    return bool(printed) and line_matches(shown[0], printed[0]) and lines_match(shown[1:],
                                                                               printed[1:])


def _trim(lines: list[str]) -> list[str]:
    lines = [x.rstrip() for x in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def check_output(where: str, shown: str, printed: str) -> None:
    shown_lines, printed_lines = _trim(shown.splitlines()), _trim(printed.splitlines())
    assert lines_match(shown_lines, printed_lines), (
        f"{where}: the output differs from what the doc shows\n--- shown:\n"
        + "\n".join(shown_lines) + "\n--- printed:\n" + "\n".join(printed_lines[:40]))


# ---------------------------------------------------------------------------------------------
# collecting the examples

ALL_BLOCKS = [b for path in DOCS for b in fenced_blocks(path)]
SHELL_COMMANDS = [c for b in ALL_BLOCKS if b.info in ("console", "sh") and b.marker != "skip"
                  for c in commands(b)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.info == "console" and b.marker == "run"]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.info == "python" and b.marker != "skip"]
INLINE = [(path, c) for path in DOCS for c in inline_commands(path)]


def _datasets(text: str) -> dict[str, str]:
    """Each ``../shared/data/NAME`` in ``text`` mapped to the real dataset's folder."""
    names = sorted(set(re.findall(re.escape(DATA_PREFIX) + r"(\w+)", text)))
    return {f"{DATA_PREFIX}{n}": str(real_dataset(n).resolve()) for n in names}


def _localise(text: str, datasets: dict[str, str]) -> str:
    for prefix, real in datasets.items():
        text = re.sub(re.escape(prefix) + r"(?![\w])", real, text)
    return text


def _scratch(tmp_path: Path) -> Path:
    """A working folder with the project's examples/ and models/, as the docs' paths expect."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("examples", "models"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


def _env(datasets: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    if datasets:
        env["ECGCAP_DATA"] = str(Path(next(iter(datasets.values()))).parent)
    return env


# ---------------------------------------------------------------------------------------------
# links


def test_the_docs_are_found():
    assert len(DOCS) >= 7 and RUN_BLOCKS and PYTHON_BLOCKS and SHELL_COMMANDS and INLINE


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path):
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_doc_is_reachable_from_the_readme():
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        path = todo.pop()
        if path in seen or path.suffix != ".md" or not path.exists():
            continue
        seen.add(path)
        todo += [(path.parent / t.partition("#")[0]).resolve() for t in links(path)
                 if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and t.partition("#")[0]]
    missing = [str(p.relative_to(ROOT)) for p in DOCS if p not in seen]
    assert not missing, f"not linked from the README (nor from a page it links): {missing}"


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; details belong in docs/"


def test_markers_are_known_and_on_checked_blocks():
    for path in DOCS:
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if "doctest:" in line and line.lstrip().startswith("<!--"):
                assert MARKER_RE.match(line), f"{path.name}:{n}: unknown marker {line!r}"
    for block in ALL_BLOCKS:
        if block.marker == "run":
            assert block.info in ("console", "python"), f"{block.where}: run needs console/python"
        if block.marker == "compile":
            assert block.info == "python", f"{block.where}: compile is for python blocks"


# ---------------------------------------------------------------------------------------------
# commands still parse


def _parse(module: str, args: list[str]) -> str | None:
    """None when ``module``'s parser accepts ``args``, else argparse's complaint."""
    parser = importlib.import_module(module).build_parser()
    parser.allow_abbrev = False  # a doc that spells an option must spell all of it
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else str(exc)
    return None


def test_every_documented_command_parses():
    problems, count = [], 0
    for command in SHELL_COMMANDS:
        for module, args in ecgcap_invocations(command.line):
            count += 1
            error = _parse(module, args)
            if error:
                problems.append(f"{command.block.where}: {command.line}\n    {error}")
    for path, line in INLINE:
        for module, args in ecgcap_invocations(line):
            count += 1
            error = _parse(module, args)
            if error:
                problems.append(f"{path.relative_to(ROOT)} (inline): {line}\n    {error}")
    assert count >= 20, count
    assert not problems, "\n".join(problems)


def test_every_command_has_its_help():
    """Each documented command answers ``--help`` in a subprocess."""
    modules = sorted({m for c in SHELL_COMMANDS for m, _ in ecgcap_invocations(c.line)})
    assert len(modules) == 8, modules
    for module in modules:
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                                text=True, timeout=120, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(f"usage: python -m {module}"), result.stdout[:200]


def test_benchmark_scripts_named_in_the_docs_exist():
    named = {m for path in DOCS for m in re.findall(r"benchmarks/\w+\.py", path.read_text())}
    assert named
    missing = sorted(n for n in named if not (ROOT / n).is_file())
    assert not missing, missing


# ---------------------------------------------------------------------------------------------
# python blocks: the imports exist; the quick ones run


def _defines(module: str, name: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations and importlib.util.find_spec(f"{module}.{name}"):
        return True
    if not spec.origin or not spec.origin.endswith(".py"):
        return True  # not ours to read
    tree = ast.parse(Path(spec.origin).read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_blocks_compile_and_import_what_exists(block):
    tree = ast.parse(compile(block.text, block.where, "exec", ast.PyCF_ONLY_AST))
    missing = [f"{node.module}.{alias.name}" for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ecgcap")
               for alias in node.names if not _defines(node.module, alias.name)]
    assert not missing, f"{block.where}: no such name {missing}"


DRIVER = """
import contextlib, io, json, sys
outputs = []
for code in json.load(open(sys.argv[1])):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "<doc>", "exec"), {"__name__": "__doc_example__"})
    outputs.append(buf.getvalue())
print(json.dumps(outputs))
"""


def test_python_examples_run_and_print_what_the_docs_show(tmp_path):
    """All runnable Python blocks in one process (one TensorFlow start), each in a fresh
    namespace; what each prints is checked against the text block under it."""
    blocks = [b for b in PYTHON_BLOCKS if b.marker in (None, "run")]
    datasets = _datasets("\n".join(b.text for b in blocks))
    work = _scratch(tmp_path / "work")
    source = tmp_path / "blocks.json"
    source.write_text(json.dumps([_localise(b.text, datasets) for b in blocks]))
    result = subprocess.run([sys.executable, "-c", DRIVER, str(source)], capture_output=True,
                            text=True, timeout=600, cwd=work, env=_env(datasets))
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    for block, out in zip(blocks, printed, strict=True):
        if block.output is not None:
            check_output(block.where, _localise(block.output, datasets), out)


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda b: b.where)
def test_console_examples_run_and_print_what_the_docs_show(block, tmp_path):
    datasets = _datasets(block.text)
    work = _scratch(tmp_path)
    for command in commands(block):
        assert ecgcap_invocations(command.line), f"{block.where}: not an ecgcap command"
        result = subprocess.run(["bash", "-c", _localise(command.line, datasets)],
                                capture_output=True, text=True, timeout=600, cwd=work,
                                env=_env(datasets))
        assert result.returncode == 0, f"{block.where}: {command.line}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        check_output(f"{block.where}: {command.line}",
                     _localise("\n".join(command.expected), datasets), result.stdout)


# ---------------------------------------------------------------------------------------------
# the checker itself


def test_the_output_matcher():
    assert line_matches("233  320  N  0.992", "233      320        N    0.990")
    assert not line_matches("233  320  N  0.992", "233  320  V  0.992")
    assert not line_matches("p 0.50", "p 0.60")
    assert line_matches("p 0.9917 n 3077", "p 0.9921 n 3078")
    assert not line_matches("p 0.9998", "p 0.9917")
    assert line_matches("a.jpg\ta man", "a.jpg\ta man")
    assert not line_matches("a.jpg\ta man", "a.jpg a man")
    assert not line_matches("img_2052953131.jpg", "img_2052953132.jpg")
    assert lines_match(["x", "...", "z"], ["x", "y", "y", "z"])
    assert not lines_match(["x", "z"], ["x", "y", "z"])
    assert ecgcap_invocations("ECGCAP_DATA=d python -m ecgcap.caption a.jpg | head -1") == [
        ("ecgcap.caption", ["a.jpg"])]
    assert slug("Rhythm: CinC 2017, 5-fold cross-validation") == (
        "rhythm-cinc-2017-5-fold-cross-validation")
    assert slug("`python -m ecgcap.train_ecg`") == "python--m-ecgcaptrain_ecg"
