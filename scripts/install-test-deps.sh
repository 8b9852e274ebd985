#!/usr/bin/env bash
# Install the Debian packages that the test suite starts for real. Idempotent:
# a package that is already installed is not touched, and apt is not called at
# all when everything is present.
set -euo pipefail

APT_PACKAGES=(
    prometheus              # promtool, and a real Prometheus for the PromQL and alert tests
    prometheus-alertmanager # amtool, and a real Alertmanager for the end-to-end alert test
    nodejs                  # tsc type-checks the dashboards against @grafana/schema
    chromium                # Playwright drives Debian's Chromium for the page tests (no browser download)
    nginx                   # the collector's nginx engine and the bench's anchor (bench/collector_latency.py)
    libnginx-mod-http-js    # njs: the nginx engine's capture hook (tests/test_sidecar_nginx.py, test_collector_proxy.py)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# TypeScript types of @grafana/schema for the dashboard type check (tests/test_dashboards.py),
# installed from the lock file; skipped when node_modules matches it already.
typecheck=dashboards/typecheck
if ! cmp -s "$typecheck/package-lock.json" "$typecheck/node_modules/.package-lock.json.installed" 2>/dev/null; then
    command -v npm >/dev/null || { echo "npm is needed for the dashboard type check: apt-get install nodejs npm" >&2; exit 1; }
    npm ci --prefix "$typecheck" --no-audit --no-fund --loglevel=error
    cp "$typecheck/package-lock.json" "$typecheck/node_modules/.package-lock.json.installed"
fi
