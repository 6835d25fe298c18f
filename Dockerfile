# mqm image: the `mqm` command with the sample model's contract, data and config.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies first, exactly as locked (versions and hashes; `make lock` writes the
# file), in a layer of their own that a change to the source does not rebuild. --no-deps:
# the lock is the whole resolved set (see `setup` in the Makefile).
COPY requirements.lock /tmp/build/
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/build/requirements.lock

# Build from a scratch folder, not /app: the installed package is what runs, and a
# source tree in the working directory would shadow it for `python -m`.
# README.md is the package's long description (pyproject's `readme`). --no-deps: nothing
# but the locked set gets in; `pip check` fails the build if the lock misses a dependency.
COPY pyproject.toml README.md /tmp/build/
COPY monitor/ /tmp/build/monitor/
COPY dashboards/ /tmp/build/dashboards/
# The serving-side client (mqm_client, also monitor.client): one source, shipped here too.
COPY clients/python/src/ /tmp/build/clients/python/src/
RUN pip install --no-cache-dir --no-deps /tmp/build && pip check && rm -rf /tmp/build

# Files are root-owned so the app user cannot change its own config; only /data is
# writable, for the SQLite store used when MQM_DATABASE_URL is not given.
RUN useradd --create-home --uid 10001 mqm && mkdir /data && chown mqm:mqm /data

WORKDIR /app
COPY monitor.yaml ./
COPY schemas/ schemas/
COPY sample_data/*.parquet sample_data/

ENV MQM_CONFIG=/app/monitor.yaml \
    MQM_DATABASE_URL=sqlite:////data/mqm.db

USER mqm
ENTRYPOINT ["mqm"]
CMD ["--help"]
