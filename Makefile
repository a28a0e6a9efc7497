.PHONY: serve test setup

# Start the MCP server over stdio (local model, no key needed).
serve:
	@./scripts/serve

# Run the whole test suite with coverage of providers/ and server/.
test:
	@./scripts/setup.sh --test
	@.venv/bin/python -m pytest --cov --cov-report=term-missing

setup:
	@./scripts/setup.sh --test
