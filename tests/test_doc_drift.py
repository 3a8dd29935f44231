"""The README and docs/ against the code: what they quote must be what the code does.

- every migration revision they name exists, and the one they call the latest is the head;
- every default a table of settings gives is the ``Settings`` default;
- every shell command parses (``bash -n``), every ``just`` recipe they name exists, every
  ``python -m service ...`` command line parses with the service's own parser, and the commands
  that need no server run;
- every figure (a number with ``x``, ``%``, ``rps``, ``ms``, ``µs``, or a number in a table of
  figures) is in a results file under ``tests/benchmarks/`` that the same section names, and each
  results file names the command, the date and the commit that produced it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.__main__ import COMMANDS, parser
from service.app import create_app
from service.settings import Settings
from tests.live import running_server
from tests.markdown_pages import FENCE, HEADING, INLINE_CODE, PAGES, ROOT, prose_lines

BENCHMARKS = ROOT / "tests" / "benchmarks"
VERSIONS = ROOT / "service" / "database" / "migrations" / "versions"
PAGE_IDS = [str(page.relative_to(ROOT)) for page in PAGES]

REVISION = re.compile(r"(?<![\w.])(00\d\d)(?![\w.])")
LATEST_REVISION = re.compile(r"(?:latest|head)[^.`]{0,60}?(?:revision|to) (00\d\d)")
SETTING_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)`(?:, `([A-Z][A-Z0-9_]*)`)? \| ([^|]*) \|", re.M)
RESULTS_FILE = re.compile(r"RESULTS[\w-]*\.md")
NUMBER = r"\d[\d,]*(?:\.\d+)?"
# A measured figure: a number with its unit, the first number of a range sharing the unit too.
FIGURE = re.compile(
    rf"(?<![\w.,/#-])[-+]?({NUMBER})(?:(?: to | and |, | / |-)[-+]?({NUMBER}))?"
    r"(?:x(?!\w)| ?%| ?(?:rps|ms|µs)(?!\w)| requests per second)"
)
TABLE_FIGURE = re.compile(rf"^[-+]?({NUMBER})(?:x|%)?(?: \(.*\))?$")
MEASURE = re.compile(r"\b(?:rps|q/s|ms|µs|instructions|per request|against|ratio)\b")
"""What makes a table one of measures: its header, or its row, names one of these."""
SHELL_FENCE = re.compile(r"^ {0,3}```(?:sh|bash|shell)\s*$")


def sections(page: Path) -> list[tuple[str, list[str]]]:
    """The page cut at its headings: each heading with its prose lines (code blocks left out)."""
    cut: list[tuple[str, list[str]]] = [("(top)", [])]
    for line in prose_lines(page.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            cut.append((heading[1], []))
        else:
            cut[-1][1].append(line)
    return cut


def code_blocks(page: Path, language: re.Pattern[str] = SHELL_FENCE) -> list[str]:
    """The text of each fenced code block of ``page`` whose opening line ``language`` matches."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in page.read_text(encoding="utf-8").splitlines():
        if current is None and language.match(line):
            current = []
        elif current is not None and FENCE.match(line):
            blocks.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def code_spans(page: Path) -> list[str]:
    """The inline code spans of ``page``'s prose."""
    prose = "\n".join(prose_lines(page.read_text(encoding="utf-8")))
    return [" ".join(match[0].strip("`").split()) for match in INLINE_CODE.finditer(prose)]


def head_revision() -> str:
    """The revision no other migration names as its ``down_revision``."""
    revisions = {path.name[:4] for path in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py")}
    downs = set(re.findall(r'^down_revision[^=]*= "(\d{4})"', _all_migrations(), re.M))
    (head,) = revisions - downs
    return head


def _all_migrations() -> str:
    return "".join(path.read_text(encoding="utf-8") for path in sorted(VERSIONS.glob("*.py")))


# Revisions


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_revision_the_docs_name_exists(page: Path) -> None:
    known = {path.name[:4] for path in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py")}
    named = set(REVISION.findall(page.read_text(encoding="utf-8")))

    assert named - known == set()


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_the_revision_the_docs_call_the_latest_is_the_head(page: Path) -> None:
    text = " ".join(page.read_text(encoding="utf-8").split())

    assert set(LATEST_REVISION.findall(text)) <= {head_revision()}


def test_the_latest_revision_check_sees_a_stale_one() -> None:
    assert LATEST_REVISION.findall("migrate prints `...: at the latest schema, revision 0002`")
    assert LATEST_REVISION.findall("brought the database to the head, revision 0003")


# Settings defaults


def shown_default(value: object) -> str:
    """A default as its environment variable would be written."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def setting_rows(page: Path) -> list[tuple[list[str], str]]:
    """(the variables, the default cell) of each row of ``page``'s tables of settings.

    A table of settings is one whose second column is headed ``default``.
    """
    rows: list[tuple[list[str], str]] = []
    header: list[str] = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = []
            continue
        if not header:
            header = [cell.strip() for cell in line.strip("|").split("|")]
            continue
        row = SETTING_ROW.match(line)
        if row and header[1:2] == ["default"]:
            rows.append(([name for name in (row[1], row[2]) if name], row[3]))
    return rows


def quoted_defaults(page: Path) -> list[tuple[str, str]]:
    """(variable, the default its table row gives in code) for each row of a settings table."""
    rows: list[tuple[str, str]] = []
    for names, default in setting_rows(page):
        values = re.findall(r"`([^`]*)`", default)
        if len(values) == len(names):
            rows.extend(zip(names, values, strict=True))
    return rows


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_default_a_settings_table_quotes_is_the_code_s(page: Path) -> None:
    defaults = {
        name.upper(): shown_default(getattr(Settings(), name))
        for name in Settings.__struct_fields__
    }
    quoted = [(name, value) for name, value in quoted_defaults(page) if name in defaults]

    assert [(name, value) for name, value in quoted if defaults[name] != value] == []


PROSE_DEFAULTS = [
    re.compile(r"`([A-Z][A-Z0-9_]+)` \((\d[\d,.]*) ?(s|ms|KiB|MiB)?[,;)]"),
    re.compile(r"`([A-Z][A-Z0-9_]+)`[^.()]{0,60}\((\d[\d,.]*) ?(s|ms|KiB|MiB)? by default"),
]
"""A default in prose: ``DB_POOL_TIMEOUT`` (5), ``MAX_HEADER_SIZE`` (16 KiB, ...), (10 by default).
"""
UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "KiB": 1024.0, "MiB": 1024.0 * 1024}


def in_base_units(name: str, value: float) -> float:
    """A setting's value in seconds or bytes: ``*_MS`` settings count milliseconds."""
    return value / 1000 if name.endswith("_MS") else value


def wrong_prose_defaults(text: str) -> list[str]:
    """Each default that ``text`` quotes in prose and that is not the ``Settings`` default."""
    text = " ".join(text.split())
    wrong: list[str] = []
    for pattern in PROSE_DEFAULTS:
        for match in pattern.finditer(text):
            name, number, unit = match[1], match[2].replace(",", ""), match[3] or ""
            if name.lower() not in Settings.__struct_fields__:
                continue
            actual = in_base_units(name, float(getattr(Settings(), name.lower())))
            if abs(float(number) * UNITS[unit] - actual) > 1e-9:
                wrong.append(match[0])
    return wrong


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_default_the_prose_quotes_is_the_code_s(page: Path) -> None:
    assert wrong_prose_defaults(page.read_text(encoding="utf-8")) == []


def test_the_prose_default_check_sees_a_wrong_one() -> None:
    text = (
        "`DB_POOL_SIZE` connections (20 by default), `SQLITE_BUSY_TIMEOUT_MS` (5 s) and\n"
        "`MAX_HEADER_SIZE` (16 KiB, Node's default)."
    )

    assert wrong_prose_defaults(text) == ["`DB_POOL_SIZE` connections (20 by default"]


def test_the_configuration_page_quotes_a_default_for_every_setting() -> None:
    quoted = dict(quoted_defaults(ROOT / "docs" / "configuration.md"))
    with_value = {
        name.upper() for name in Settings.__struct_fields__ if getattr(Settings(), name) != ""
    }

    assert with_value - set(quoted) == set()


def test_the_readme_names_the_six_settings_people_change() -> None:
    names = {name for names, _ in setting_rows(ROOT / "README.md") for name in names}

    assert names == {
        "DATABASE_URL",
        "API_KEY",
        "HOST",
        "PORT",
        "ALLOWED_HOSTS",
        "FORWARDED_ALLOW_IPS",
        "SHUTDOWN_DRAIN_SECONDS",
    }


def test_dot_env_is_said_to_hold_settings_fields_only() -> None:
    page = " ".join((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").split())

    assert "not from `.env`" in page


# Shell commands


def shell_blocks() -> list[tuple[str, str]]:
    """(where, text) of every shell code block of the README and the docs."""
    return [
        (f"{page.relative_to(ROOT)}#{index}", block)
        for page in PAGES
        for index, block in enumerate(code_blocks(page))
    ]


def command_lines() -> list[str]:
    """Every command the README and the docs show: shell blocks' lines and inline commands."""
    lines: list[str] = []
    for _, block in shell_blocks():
        joined = re.sub(r"\\\n\s*", " ", block)
        lines.extend(line.strip() for line in joined.splitlines() if line.strip())
    for page in PAGES:
        lines.extend(
            span
            for span in code_spans(page)
            if re.match(r"(\.venv/bin/)?just |python -m service|litestar ", span)
        )
    return [line for line in lines if not line.startswith("#")]


def recipes() -> set[str]:
    """The recipes of the justfile."""
    justfile = (ROOT / "justfile").read_text(encoding="utf-8")
    return set(re.findall(r"^@?([a-z][\w-]*)(?:[ \t][^:\n]*)?:(?!=)", justfile, re.M))


def service_command_lines() -> list[list[str]]:
    """The arguments of each ``python -m service ...`` command the docs show (placeholders as 1)."""
    found: list[list[str]] = []
    for line in command_lines():
        for match in re.finditer(r"python -m service(?![.\w])([^#;&|>)`]*)", line):
            words = shlex.split(re.sub(r"<[^>]*>", "1", match[1]))
            found.append(["1" if re.fullmatch(r"[A-Z]+", word) else word for word in words])
    return found


@pytest.mark.parametrize(("where", "block"), shell_blocks(), ids=[w for w, _ in shell_blocks()])
def test_every_shell_block_parses(where: str, block: str) -> None:
    checked = subprocess.run(
        ["bash", "-n"], input=block, capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, (where, checked.stderr)


def test_every_just_recipe_the_docs_name_exists() -> None:
    named = {
        match[1]
        for line in command_lines()
        for match in re.finditer(r"(?:^|[\s;&|(])(?:\.venv/bin/)?just ([a-z][\w-]*)", line)
    }

    assert named, "no just recipe found in the docs"
    assert named - recipes() == set()


def test_every_python_m_service_command_line_parses() -> None:
    refused: list[str] = []
    for words in service_command_lines():
        # As main() reads them: no command is serve.
        argv = words if words and words[0] in (*COMMANDS, "-h", "--help") else ["serve", *words]
        try:
            parser().parse_args(argv)
        except SystemExit:
            refused.append(" ".join(argv))

    assert service_command_lines()
    assert refused == []


RUNNABLE = re.compile(
    r"^(?:python -m service (?:migrate|backup)|just (?:migrate|backup)|"
    r"litestar --app service\.app:app database (?:upgrade|--help))\b"
)
"""Commands of the docs that need no server: they run in a test, on a SQLite file."""


def runnable_commands() -> list[str]:
    commands: list[str] = []
    for line in command_lines():
        command = line.split(" #", 1)[0].strip().rstrip("`")
        if RUNNABLE.match(command) and not re.search(r"<|\b[A-Z]{2,}\b", command):
            commands.append(command)
    # Migrations first: a backup needs a database.
    return sorted(set(commands), key=lambda command: ("backup" in command, command))


def test_the_commands_that_need_no_server_run(tmp_path: Path) -> None:
    just = shutil.which("just") or str(Path(sys.executable).parent / "just")
    script = "\n".join(
        [
            "set -e",
            # Recipes run where the test does, not in the checkout.
            f"just() {{ {shlex.quote(just)} --justfile {ROOT / 'justfile'} "
            '--working-directory "$PWD" "$@"; }',
            *(f"echo '+ {command}'; {command}" for command in runnable_commands()),
        ]
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'heroes.db'}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    ran = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )

    assert len(runnable_commands()) >= 4
    assert ran.returncode == 0, ran.stdout + ran.stderr


# Figures


def results_files() -> list[Path]:
    return sorted(BENCHMARKS.glob("RESULTS*.md"))


@pytest.mark.parametrize("results", results_files(), ids=lambda path: path.name)
def test_every_results_file_names_its_command_date_and_commit(results: Path) -> None:
    text = results.read_text(encoding="utf-8")

    assert re.search(r"`(python -m tests\.benchmarks\.\w+|just bench[\w-]*)[^`]*`", text)
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", text)
    assert re.search(r"\b(?:at|commit|Service at) (?:commit )?[0-9a-f]{7,40}\b", text)


def figures(lines: list[str]) -> list[str]:
    """The measured figures of ``lines`` of prose: numbers with a unit, and numbers in tables of
    measures (a table whose header or row names a unit)."""
    found: list[str] = []
    header = ""
    for line in lines:
        text = INLINE_CODE.sub("", line)
        if not text.lstrip().startswith("|"):
            header = ""
        else:
            cells = [cell.strip() for cell in text.strip().strip("|").split("|")]
            header = header or text
            if all(re.fullmatch(r":?-+:?", cell) for cell in cells) or not MEASURE.search(
                header + text
            ):
                continue
            for cell in cells:
                table_figure = TABLE_FIGURE.match(cell)
                if table_figure and re.search(r"[,.]|\d{3}", table_figure[1]):
                    found.append(table_figure[1])
        for match in FIGURE.finditer(text):
            found.extend(number for number in match.groups() if number)
    return found


def numbers_of(text: str) -> set[Decimal]:
    return {Decimal(number.replace(",", "")) for number in re.findall(NUMBER, text)}


def is_in(figure: str, numbers: set[Decimal]) -> bool:
    """Whether ``figure`` is one of ``numbers``, or one of them rounded as ``figure`` is."""
    value = Decimal(figure.replace(",", ""))
    exponent = value.as_tuple().exponent
    places = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return any(
        value in (number, number.quantize(places, ROUND_HALF_UP), number.quantize(places))
        for number in numbers
    )


def unsourced_figures(page: Path) -> list[str]:
    """Each figure of ``page`` that no results file named in its section holds."""
    unsourced: list[str] = []
    for heading, lines in sections(page):
        named = set(RESULTS_FILE.findall("\n".join(lines)))
        missing = [name for name in named if not (BENCHMARKS / name).is_file()]
        unsourced.extend(f"{heading}: names {name}, which does not exist" for name in missing)
        numbers: set[Decimal] = set()
        for name in named - set(missing):
            numbers |= numbers_of((BENCHMARKS / name).read_text(encoding="utf-8"))
        unsourced.extend(
            f"{heading}: {figure}" for figure in figures(lines) if not is_in(figure, numbers)
        )
    return unsourced


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_figure_is_in_a_results_file_its_section_names(page: Path) -> None:
    assert unsourced_figures(page) == []


def test_the_figure_check_sees_a_figure_without_a_source(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Sourced\n\n"
        "Get-one served 7.5x the tutorial app and 3,245 rps (`tests/benchmarks/RESULTS.md`).\n\n"
        "## Unsourced\n\nThe access log costs 12%; 2.54x vs 5.01x.\n\n"
        "| one worker, rps | get-one |\n|---|---:|\n| ours | 3,245 |\n"
        "\n| status | meaning |\n|---|---|\n| 404 | not found |\n",
        encoding="utf-8",
    )

    assert unsourced_figures(page) == [
        "Unsourced: 12",
        "Unsourced: 2.54",
        "Unsourced: 5.01",
        "Unsourced: 3,245",
    ]


# Examples of answers


def found(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    """The first match of ``pattern`` in ``text``, which must have one."""
    match = re.search(pattern, text, flags)
    assert match is not None, pattern
    return match


def test_the_link_example_names_the_parameters_the_service_puts_in_link() -> None:
    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    request, documented = found(
        r"curl -i '(?:http://127\.0\.0\.1:8000)?([^']+)'\n# Link: <([^>]+)>", page
    ).groups()
    app = create_app(Settings(database_url="sqlite:///:memory:", access_log=False))
    with TestClient(app) as client:
        for age in (30, 40, 50):
            client.post("/heroes", json={"name": "Hero", "secret_name": "S", "age": age})
        link = client.get(request).headers["link"]

    answered = found(r"<([^>]+)>", link)[1]
    assert [name for name, _ in parse_qsl(urlsplit(answered).query)] == [
        name for name, _ in parse_qsl(urlsplit(documented).query)
    ]


def test_the_cors_section_lists_the_headers_a_browser_may_read() -> None:
    page = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    sentence = found(r"may read the response headers ([^.]*)\.", " ".join(page.split()))[1]
    settings = Settings(
        database_url="sqlite:///:memory:", access_log=False, cors_allow_origins="https://a.example"
    )
    with TestClient(create_app(settings)) as client:
        exposed = client.get("/heroes", headers={"Origin": "https://a.example"}).headers[
            "access-control-expose-headers"
        ]

    assert set(re.findall(r"`([\w-]+)`", sentence)) == set(exposed.split(", "))


def test_the_traced_insert_is_the_one_the_service_runs(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    block = found(r"db\.statement = (INSERT INTO heroes.*?)\n└", page, re.S)[1]
    documented = " ".join(line.strip(" │") for line in block.splitlines())
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'heroes.db'}", tracing=True)
    with TestClient(create_app(settings)) as client:
        spans.clear()
        client.post("/heroes", json={"name": "Deadpond", "secret_name": "Dive Wilson"})

    statements = [
        str((span.attributes or {}).get("db.statement")) for span in spans.get_finished_spans()
    ]
    assert documented in statements


def test_the_example_pgbouncer_pool_is_2_to_4_per_core_as_its_own_rule_says() -> None:
    example = (ROOT / "deploy" / "pgbouncer.ini").read_text(encoding="utf-8")
    cores = int(found(r"database server of (\d+) cores", example)[1])
    pool = int(found(r"^default_pool_size = (\d+)$", example, re.M)[1])
    deployment = " ".join((ROOT / "docs" / "deployment.md").read_text(encoding="utf-8").split())
    quoted = re.findall(r"`default_pool_size` of (\d+)(?: to (\d+))? for a (\d+)-core", deployment)

    assert 2 * cores <= pool <= 4 * cores
    assert quoted
    for low, high, per in quoted:
        assert 2 * int(per) <= int(low) <= int(high or low) <= 4 * int(per)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_variable_a_settings_table_lists_is_a_settings_field(page: Path) -> None:
    fields = {name.upper() for name in Settings.__struct_fields__}
    listed = {name for names, _ in setting_rows(page) for name in names}

    assert listed - fields == set()


# Test prerequisites


def test_every_variable_the_test_tooling_reads_is_on_the_testing_page() -> None:
    read: set[str] = set()
    for path in [*(ROOT / "tests").glob("*.py"), *(ROOT / "tools").glob("*.py")]:
        read |= set(re.findall(r"environ(?:\.get\(|\[)\s*\"(TEST_\w+)\"", path.read_text("utf-8")))
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")

    assert {"TEST_POSTGRES_URL", "TEST_REDIS_URL"} <= read
    assert {name for name in read if f"`{name}" not in page} == set()


def test_ci_installs_node_and_npm_which_the_sdk_tests_need_under_ci() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    sdk_tests = (ROOT / "tests" / "test_sdk.py").read_text(encoding="utf-8")

    assert '"node", "npm"' in sdk_tests
    assert re.search(r"apt-get install [^\n]*\bnodejs npm\b", ci)


def test_every_install_of_the_service_the_docs_show_uses_the_constraints() -> None:
    installs = [
        line
        for line in command_lines()
        if re.search(r"pip install .*(?:\s|-e\s*)['\"]?\.(?:\[[\w,]*\])?['\"]?(?:\s|$)", line)
    ]

    assert installs
    assert [line for line in installs if "-c constraints.txt" not in line] == []


def test_a_docs_block_that_runs_just_installs_the_dev_extra_first() -> None:
    for where, block in shell_blocks():
        if "pip install" in block and re.search(r"(?:^|\s)(?:\.venv/bin/)?just \w", block):
            assert "[dev]" in block, where


# The README's first requests, against a live server


def first_requests() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## First requests", 1)[1]
    (block,) = code_blocks_of(section)
    return block


def code_blocks_of(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)


@pytest.mark.live
@pytest.mark.parametrize("api_key", ["change-me", ""], ids=["with API_KEY", "without"])
def test_the_readme_first_requests_run_as_written(tmp_path: Path, api_key: str) -> None:
    with running_server(f"sqlite:///{tmp_path / 'heroes.db'}", API_KEY=api_key) as server:
        script = first_requests().replace("http://127.0.0.1:8000", server.url)
        ran = subprocess.run(
            ["bash", "-c", f"set -e\n{script}"],
            env={**os.environ, "API_KEY": api_key},
            capture_output=True,
            text=True,
            check=False,
        )
        written = " ".join(first_requests().split())
        without_key = httpx.post(f"{server.url}/heroes", json={"name": "A", "secret_name": "B"})

    assert ran.returncode == 0, ran.stderr
    assert "HTTP/1.1 201 Created" in ran.stdout
    assert ran.stdout.rstrip().endswith('{"ok":true}')
    assert '"Deadpond"' in ran.stdout
    assert "Dive Wilson" not in ran.stdout
    assert "curl" in written
    if api_key:
        readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
        assert without_key.status_code == 401
        assert f"`{without_key.text}`" in readme
        assert without_key.headers["www-authenticate"].startswith("Bearer")
    else:
        assert without_key.status_code == 201


def commented_curls(block: str) -> list[tuple[str, str]]:
    """(command, the comment that says its answer) for each curl of a block, as written: the
    comment at the end of its line, or on the line after it."""
    found: list[tuple[str, str]] = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        command, _, comment = line.partition("  # ")
        if command.startswith("curl "):
            found.append((command.strip(), comment.strip()))
        elif line.startswith("# ") and found and not found[-1][1]:
            found[-1] = (found[-1][0], line[2:].strip())
    return found


ANSWERED_BLOCKS = [
    block
    for block in code_blocks(ROOT / "docs" / "api.md")
    if any(re.match(r"\d{3}\b|ETag", comment) for _, comment in commented_curls(block))
]


@pytest.mark.live
def test_the_api_page_s_examples_answer_as_their_comments_say(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'heroes.db'}") as server:
        for number in range(1, 7):
            httpx.post(f"{server.url}/heroes", json={"name": f"Hero {number}", "secret_name": "S"})
        script = "curl() { command curl -s -i \"$@\"; echo '@@@'; }\n" + "\n".join(ANSWERED_BLOCKS)
        ran = subprocess.run(
            ["bash", "-c", script.replace("http://127.0.0.1:8000", server.url)],
            capture_output=True,
            text=True,
            check=False,
        )
    answers = ran.stdout.split("@@@\n")[:-1]
    comments = [comment for block in ANSWERED_BLOCKS for _, comment in commented_curls(block)]

    assert len(ANSWERED_BLOCKS) >= 2
    assert len(answers) == len(comments), ran.stderr
    for answer, comment in zip(answers, comments, strict=True):
        status = re.match(r"(\d{3})\b", comment)
        headers = answer.split("\r\n\r\n", 1)[0].lower()
        if status:
            assert answer.startswith(f"HTTP/1.1 {status[1]} "), (comment, answer)
        for name, value in re.findall(r"([\w-]+): (\"\d+\"|/heroes/\d+|true)", comment):
            assert f"{name.lower()}: {value}" in headers, (comment, answer)
