# The front door: `just` lists the recipes.

# Recipes run in the project's virtual environment (.venv) when there is one, activated or not.
export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

default:
    @just --list

# Serve the API on http://127.0.0.1:8000 (SQLite file heroes.db unless DATABASE_URL says otherwise)
serve:
    python -m service

# Serve with N worker processes on HOST:PORT (run `just migrate` first on PostgreSQL)
serve-prod workers="2" host="0.0.0.0" port="8000":
    python -m service --workers {{workers}} --host {{host}} --port {{port}}

# Bring the database at DATABASE_URL to the latest schema
migrate:
    python -m service migrate

# Run the test suite: on every core, then the tests marked alone one at a time (PostgreSQL tests run when the server on 127.0.0.1:5432 answers)
test *args:
    python tools/run_tests.py {{args}}

# The Quick start and the suite on Python VERSION (3.11-3.15), in a fresh clone; 3.13-3.15 from Debian roots (see tools/pythons.py)
test-python version *args:
    python3 tools/pythons.py test {{version}} {{args}}

# The suite on the newest releases of every dependency; prints how they differ from constraints.txt
test-newest *args:
    python3 tools/pythons.py newest {{args}}

# Copy the SQLite database at DATABASE_URL to PATH while the service runs (makes its folder; never overwrites)
backup path:
    python -m service backup {{path}}

# The tests but for live servers, fuzzing, SDKs and browsers: a quick check while coding
test-fast *args:
    python tools/run_tests.py -m "not live and not fuzz and not sdk and not browser and not container" {{args}}

# Fuzz the API with Schemathesis on a random seed, or replay one: `just fuzz 1234`
[positional-arguments]
fuzz seed="" examples="300" *pytest_args:
    #!/usr/bin/env sh
    seed="$1"; examples="$2"; shift 2
    [ -n "$seed" ] || seed=$(python -c 'import secrets; print(secrets.randbelow(2**32))')
    echo "fuzzing with seed $seed, $examples examples per operation"
    FUZZ_SEED=$seed FUZZ_EXAMPLES=$examples python -m pytest tests/test_fuzz.py -m fuzz \
        --hypothesis-seed="$seed" "$@"
    status=$?
    echo "seed $seed: replay with \`just fuzz $seed $examples\`"
    exit $status

# Build the container image hero-service:<version> and :latest with podman (or docker); BASE_IMAGE=..., EXTRAS=... choose
image *build_flags:
    python tools/image.py build {{build_flags}}

# Build the image on a Debian 13 base made by debootstrap (cached) and test it with podman, and play deploy/kubernetes/ (installs them if missing)
image-test *pytest_args:
    #!/usr/bin/env bash
    set -euo pipefail
    started=$SECONDS
    missing=""
    for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
    if [ -n "$missing" ]; then apt-get update -q && apt-get install -y -q $missing; fi
    # podman as it runs on machines like CI's: runc (crun refuses their cgroup layout), the
    # host's network, explicit limits (the implicit ones cannot be set there).
    export CONTAINER_ENGINE="podman --runtime runc --cgroup-manager cgroupfs"
    flags=(--network host --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
    base=localhost/hero-debian-python:trixie
    python tools/image.py debian-base "$base" trixie
    BASE_IMAGE="$base" python tools/image.py build "${flags[@]}"
    # Every build leaves the images it replaced untagged: keep a day's, for the layer cache.
    $CONTAINER_ENGINE image prune --force --filter until=24h \
        --filter label=org.opencontainers.image.title=hero-service
    built=$SECONDS
    python -m pytest -m container tests/test_container.py tests/test_kubernetes.py {{pytest_args}}
    size=$($CONTAINER_ENGINE image inspect --format '{{{{.Size}}' hero-service:latest)
    echo "image-test: hero-service:latest is $((size / 1000000)) MB on $base;" \
        "base and build $((built - started)) s, tests $((SECONDS - built)) s"

# What get-one, list-20 and create cost in-process: framework, service code, database (µs/request)
bench-costs *args:
    python -m tests.benchmarks.costs {{args}}

# The measurements behind choices the code makes (tests/benchmarks/RESULTS-choices.md)
bench-choices *args:
    python -m tests.benchmarks.choices {{args}}

# Write the OpenAPI document the service serves to openapi.json, for SDK generators
openapi:
    python -m service.openapi_document openapi.json

# Pin the docs pages' assets to these npm versions, e.g. `just docs-assets redoc@2.5.4` (needs npm)
docs-assets +specs:
    python tools/docs_assets.py {{specs}}

# Lint and type-check, and lint the migrations
lint:
    ruff check .
    ruff format --check .
    mypy
    python tools/lint_migrations.py

# squawk over the SQL each migration runs on PostgreSQL (`alembic upgrade --sql`, offline)
lint-migrations *args:
    python tools/lint_migrations.py {{args}}

# Format the code and apply safe lint fixes
fmt:
    ruff format .
    ruff check --fix .

# 256 clients mixing every operation for 30 s on a fresh SQLite file; fails on any 5xx, timeout or lost write
load workers="1" seconds="30" database_url="sqlite:///load.db":
    rm -f load.db load.db-wal load.db-shm
    python -m tests.live --workers {{workers}} --seconds {{seconds}} --database-url {{database_url}}

# Pin every dependency of the dev install, as a fresh venv resolves it today, in constraints.txt
lock:
    #!/usr/bin/env bash
    set -euo pipefail
    venv="$(mktemp -d)"
    trap 'rm -rf "$venv"' EXIT
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e ".[dev]"
    {
        echo "# Every dependency of the dev install, pinned: written by 'just lock', installed by CI"
        echo "# and the Quick start with 'pip install -c constraints.txt -e \".[dev]\"'."
        "$venv/bin/python" -m pip freeze --exclude-editable
    } > constraints.txt
    echo "wrote constraints.txt"

# Draw docs/speed.svg, the chart in docs/speed.md, from the results `just bench` wrote (tests/benchmarks/RESULTS*.md)
speed-chart:
    python tools/speed_chart.py docs/speed.svg

# Load benchmarks against the FastAPI tutorial app and a framework-free ceiling (installs wrk)
bench *args:
    command -v wrk || (apt-get update -q && apt-get install -y -q wrk)
    pip install -q -e '.[bench]'
    python -m tests.benchmarks.run {{args}}
