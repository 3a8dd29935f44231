# The front door: `just` lists the recipes.

default:
    @just --list

# Serve the API on http://127.0.0.1:8000 (SQLite file heroes.db unless DATABASE_URL says otherwise)
serve:
    uvicorn service.app:app --host 127.0.0.1 --port 8000

# Run the test suite (PostgreSQL tests run when the server on 127.0.0.1:5432 answers)
test *args:
    python -m pytest {{args}}

# Lint and type-check
lint:
    ruff check .
    ruff format --check .
    mypy

# Format the code and apply safe lint fixes
fmt:
    ruff format .
    ruff check --fix .
