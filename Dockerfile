# The driftwarden Python services: collector, detectors, api, migrate (and the loadgen).
#
# Layers follow what changes least: the dependencies are installed from pyproject.toml alone,
# so editing the sources rebuilds only the last layers. Build from the repository root:
#   docker build -t driftwarden:0.1.0 .
# At run time the image contacts only what it is configured to (store, upstream, hub).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/driftwarden

# 0. nginx and its njs module, from Debian: the collector's nginx engine (`--engine nginx`, collector/README.md,
#    "Data planes") runs them as this image's user, with its own configuration under the spool directory.
RUN apt-get update \
    && apt-get install -y --no-install-recommends 'nginx=1.22.1-9+deb12u*' 'libnginx-mod-http-js=0.7.9-*' \
    && rm -rf /var/lib/apt/lists/*

# 1. Dependencies, from the [project] dependencies of pyproject.toml only.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    # Capital Bikeshare data for the loadgen: a data package, installed without its (heavy) dependencies.
    && pip install --no-deps islp==0.6.0 \
    && rm /tmp/requirements.txt

# 2. The project itself.
COPY README.md ./
COPY driftwarden/ driftwarden/
COPY collector/ collector/
COPY detectors/ detectors/
COPY storage/ storage/
COPY dashboards/ dashboards/
COPY alerts/ alerts/
COPY deploy/loadgen/ deploy/loadgen/
COPY deploy/detectors.yaml /etc/driftwarden/detectors.yaml
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/driftwarden --create-home driftwarden \
    && install -d -o driftwarden -g driftwarden /var/lib/driftwarden/spool

USER driftwarden
WORKDIR /var/lib/driftwarden
ENTRYPOINT []
CMD ["driftwarden", "--help"]
