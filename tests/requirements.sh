#!/usr/bin/env bash
# What the tests need beyond `npm ci`, found or installed before they run. `npm test` runs
# this first, and so CI (.ci/run calls `npm test`): one list, one way to get it.
#   Debian's prometheus (prometheus, promtool): tests/metrics.test.js checks the exposition
#   with promtool and scrapes a daemon with a real Prometheus.
# Quiet when everything is there; a line on stderr for each thing it installs; when it cannot
# install (not root, no sudo, no apt), it says what to install and lets the tests run: the
# tests that need it fail, naming it.
set -uo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi

say() { echo "mlxs tests: $*" >&2; }
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    say "prometheus and promtool are missing; install Debian's 'prometheus' package (apt-get install prometheus) or the metrics tests fail"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null; then
  say "prometheus and promtool are missing and there is no apt-get here: install Prometheus 2.x (with promtool) on PATH, or the metrics tests fail"
  exit 0
fi

say "installing Debian's prometheus package (prometheus, promtool) for the metrics tests, about a minute ..."
export DEBIAN_FRONTEND=noninteractive
install() { $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }
# a fresh machine's package lists may be empty or old: update once, then try again
if ! install && ! { $sudo apt-get update -q >/dev/null 2>&1 && install; }; then
  say "could not install prometheus: the metrics tests will fail"
  exit 0
fi
# the package starts its own service where an init system runs: the tests start their own
$sudo systemctl stop prometheus >/dev/null 2>&1 || true
say "prometheus installed"
