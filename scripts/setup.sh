#!/usr/bin/env bash
# Installs everything barcode-pipeline needs on a fresh Debian machine, idempotently:
# system packages (JDK, Maven, Redis, MariaDB), a virtualenv with the package, and the Kafka jars.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
{ command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
# The ha profile (stack up --profile ha): Sentinels, and iptables for the partition faults.
{ command -v redis-sentinel >/dev/null 2>&1 || [ -x /usr/bin/redis-sentinel ]; } || need+=(redis-sentinel)
{ command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ]; } || need+=(iptables)
# HAProxy in front of the app hosts' ingest (the ha profile's load balancer, stack/haproxy.py).
{ command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; } || need+=(haproxy)
# Monitoring (`stack up --monitoring`, promtool in the tests) and `systemd-analyze verify` of deploy/systemd.
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-redis-exporter >/dev/null 2>&1 || need+=(prometheus-redis-exporter)
command -v prometheus-mysqld-exporter >/dev/null 2>&1 || need+=(prometheus-mysqld-exporter)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)  # disk space of the data dirs
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# A real browser for the test that /docs works with no other host reachable (tests/web/test_docs_browser.py).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need[*]}"
  # Package install scripts must not start system-wide servers: the project runs its own on other ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The product, its dev extra and the harness, exactly as uv.lock pins them (hashes checked): the same
# commit installs the same versions on any day. A pyproject.toml whose ranges changed without a new
# lock fails here, before anything is installed.
if ! bash scripts/uv.sh lock --check -q 2>/dev/null; then
  echo "setup: uv.lock is out of date with pyproject.toml: run 'make lock', let the suite pass, commit both" >&2
  exit 1
fi
bash scripts/uv.sh sync --locked --all-extras --all-packages -q
# vegeta, the independent open-loop load tool of `bench vegeta`, from the Go module proxy.
VEGETA_VERSION=v12.13.0
if [ ! -x .venv/bin/vegeta ]; then
  GO=$(command -v go || true)
  [ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
  if [ -z "$GO" ]; then
    echo "setup: installing the Go toolchain (for vegeta)"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq golang-go >/dev/null
    GO=$(command -v go)
  fi
  echo "setup: building vegeta $VEGETA_VERSION"
  GOBIN="$PWD/.venv/bin" "$GO" install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
fi
echo "setup: ok"
