#!/usr/bin/env bash
# Installs the system packages the tests use when they are missing: a real redis-server,
# curl, h2load (nghttp2-client), wrk (benchmarks) and chromium (the example pages' browser
# tests drive Debian's chromium with Playwright; `playwright install` is never needed).
# supervisord comes from the virtualenv (the `supervisor` Python package is a runtime
# dependency). Installs only as root; otherwise says what to run.
set -u
declare -A wanted=([rabbitmq-server]=rabbitmq-server [redis-server]=redis-server [curl]=curl [h2load]=nghttp2-client [wrk]=wrk
  [chromium]=chromium)
missing=()
for command in "${!wanted[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${wanted[$command]}")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "system-deps: apt-get install ${missing[*]} failed" >&2; exit 1; }
else
  echo "system-deps: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
  echo "system-deps: tests that need them are skipped (or fail with TOWPATH_REQUIRE_SERVICES=1)" >&2
fi
