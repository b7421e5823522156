# The README's two commands: `make serve` and `make test`. Both set up what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test sysdeps layers bench clean model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# DCMTK, Orthanc, dicom3tools and PostgreSQL for the tests; installs them only when missing.
sysdeps:
	@deploy/install-system-deps.sh

serve: $(STAMP)
	$(BIN)/radpair serve

# The import contracts of docs/architecture.md (pyproject.toml [tool.importlinter]), checked on an
# installed copy: the editable install maps the layer folders onto radpair.*, which grimp cannot follow.
layers: $(STAMP)
	rm -rf build/layers
	$(BIN)/pip install -q --no-deps --no-compile --no-build-isolation --target build/layers . 2>/dev/null
	cd build && PYTHONPATH=layers ../$(BIN)/lint-imports --no-cache ../pyproject.toml

test: $(STAMP) sysdeps layers
	$(BIN)/pytest tests

bench: $(STAMP) sysdeps
	$(BIN)/pytest tests/bench -s

# Re-create the model shipped in triton_models/ with radpair's own pipeline (a few minutes on CPU):
# cohort -> fine-tuning (triton_models/shipped_model.toml) -> export as the next version.
model: $(STAMP)
	triton_models/make_model.sh

clean:
	rm -rf $(VENV) build *.egg-info
