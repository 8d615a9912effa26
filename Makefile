# The two set-up commands are `make demo` and `make test`; both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install -q --disable-pip-version-check
# One .venv, filled in two steps, each redone only when pyproject.toml changes:
# DEMO_STAMP: eas-serving itself (editable) with the sklearn extra, what `make demo` needs
#   (Ray Serve, the server, scikit-learn; about 0.7 GB);
# STAMP: the test extra on top (every framework; torch from PyPI brings its CUDA
#   libraries: about 8.9 GB in all). pip keeps whatever already satisfies a requirement:
#   it adds the missing packages and changes one the demo installed only where a test
#   package needs another version. README.md has the numbers (scripts/measure-first-run.sh).
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed-test
# The official EAS SDKs the tests drive (tests/sdk); versions pinned in their own files.
SDK_PY_VENV := tests/sdk/python/.venv
SDK_PY_STAMP := $(SDK_PY_VENV)/.installed
# Alibaba's management SDKs (alibabacloud-eas20210701, alipai) for the OpenAPI tests.
SDK_MGMT_VENV := tests/sdk/mgmt/.venv
SDK_MGMT_STAMP := $(SDK_MGMT_VENV)/.installed
SDK_JAVA_STAMP := tests/sdk/java/target/.deps-resolved
# tritonclient (the v2 protocol tests in tests/e2e) needs protobuf<7: its own venv too.
V2C_VENV := tests/e2e/v2client/.venv
V2C_STAMP := $(V2C_VENV)/.installed

.PHONY: demo test unit e2e sdk sdk-deps v2client-deps pg-deps browser-deps container-deps deploy-tools bench install clean protos

$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[sklearn]"
	touch $(DEMO_STAMP)

# "eas-serving[test]" names the editable install of this checkout made above (its
# metadata refreshed from pyproject.toml): pip resolves the extra against it and installs
# only what is missing. Should .venv hold no such install, `-e ".[test]"` makes one.
EDITABLE_HERE := import json, pathlib, sys, importlib.metadata as md; \
  url = json.loads(md.distribution("eas-serving").read_text("direct_url.json") or "{}").get("url"); \
  sys.exit(url != pathlib.Path.cwd().resolve().as_uri())
$(STAMP): pyproject.toml $(DEMO_STAMP)
	@if $(PY) -I -c '$(EDITABLE_HERE)' 2>/dev/null; then set -x; $(PIP_INSTALL) "eas-serving[test]"; \
	else set -x; $(PIP_INSTALL) -e ".[test]"; fi
	touch $(STAMP)

install: $(STAMP)

# The Python SDK needs protobuf<=3.20.3, which Ray cannot share: its own venv.
$(SDK_PY_STAMP): tests/sdk/python/requirements.txt
	test -x $(SDK_PY_VENV)/bin/python || $(PYTHON) -m venv $(SDK_PY_VENV)
	$(SDK_PY_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/sdk/python/requirements.txt
	touch $(SDK_PY_STAMP)

# alipai and alibabacloud-eas20210701 pin protobuf and numpy versions Ray cannot share.
$(SDK_MGMT_STAMP): tests/sdk/mgmt/requirements.txt
	test -x $(SDK_MGMT_VENV)/bin/python || $(PYTHON) -m venv $(SDK_MGMT_VENV)
	$(SDK_MGMT_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/sdk/mgmt/requirements.txt
	touch $(SDK_MGMT_STAMP)

# Maven resolves the Java SDK, JUnit and the plugins once, online (a run with no test
# selected still resolves them), so the test run can be `mvn -o`.
$(SDK_JAVA_STAMP): tests/sdk/java/pom.xml
	cd tests/sdk/java && mvn -q -B test -Dtest=NoSuchTest -Dsurefire.failIfNoSpecifiedTests=false
	touch $(SDK_JAVA_STAMP)

sdk-deps: $(SDK_PY_STAMP) $(SDK_MGMT_STAMP) $(SDK_JAVA_STAMP)

$(V2C_STAMP): tests/e2e/v2client/requirements.txt
	test -x $(V2C_VENV)/bin/python || $(PYTHON) -m venv $(V2C_VENV)
	$(V2C_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/e2e/v2client/requirements.txt
	touch $(V2C_STAMP)

v2client-deps: $(V2C_STAMP)

demo: $(DEMO_STAMP)
	bash scripts/demo.sh

# PostgreSQL for the store tests (Debian's package; the tests run their own server).
pg-deps:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q postgresql; } \
	  || { echo "make pg-deps: install PostgreSQL (apt-get install postgresql)" >&2; exit 1; }

# Chromium and chromedriver for the console's browser test (tests/e2e/test_console_browser.py):
# Debian's packages, driven by selenium from the test extra; no test tool downloads a browser.
browser-deps:
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } \
	  || { echo "make browser-deps: install Chromium (apt-get install chromium chromium-driver)" >&2; exit 1; }

# podman and its engine settings for container services (tests/e2e/test_containers.py
# builds its images offline with it; docs/operations.md, "Containers").
container-deps:
	bash scripts/container-deps.sh

# helm, kubeconform and the Kubernetes + KubeRay schemas, cached under .tools/ (tests/deploy).
deploy-tools: $(STAMP)
	PY=$(PY) bash scripts/deploy-tools.sh

test: $(STAMP) sdk-deps v2client-deps pg-deps browser-deps container-deps deploy-tools
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/deploy
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e
	$(PY) -m pytest -q -p no:cacheprovider tests/sdk

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

e2e: $(STAMP) v2client-deps container-deps
	$(PY) -m pytest -q tests/e2e

sdk: $(STAMP) sdk-deps
	$(PY) -m pytest -q tests/sdk

clean:
	rm -rf $(VENV) $(SDK_PY_VENV) $(SDK_MGMT_VENV) $(V2C_VENV) tests/sdk/java/target .demo *.egg-info .tools

# The protobuf schemas: each folder's .proto files compiled into one descriptor set,
# descriptors.binpb beside them, which the code loads (processors/protobuf.py). Both
# are committed; run this after editing a .proto (tests/unit/test_protos.py fails
# until the descriptor set matches). grpcio-tools comes with the test extra.
PROTO_DIRS := processors/protos eas/protocols/protos
protos: $(STAMP)
	@for dir in $(PROTO_DIRS); do \
	  echo "protoc $$dir/*.proto -> $$dir/descriptors.binpb"; \
	  $(PY) -m grpc_tools.protoc --include_imports --descriptor_set_out=$$dir/descriptors.binpb \
	    -I$$dir $$dir/*.proto || exit 1; \
	done

# make bench [SCENARIOS="echo sklearn ..."]: side-by-side numbers (bench/run.py).
BENCH_ML_VENV := bench/.venv-mlserver
$(BENCH_ML_VENV)/.installed:
	test -x $(BENCH_ML_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_ML_VENV)
	$(BENCH_ML_VENV)/bin/python -m pip install -q --disable-pip-version-check mlserver==1.7.1 mlserver-sklearn==1.7.1
	touch $@

bench/loadgen/loadgen: bench/loadgen/main.go bench/loadgen/go.mod
	cd bench/loadgen && go build -o loadgen .

bench: $(STAMP) bench/loadgen/loadgen $(BENCH_ML_VENV)/.installed
	$(PY) -m bench.run $(SCENARIOS)
