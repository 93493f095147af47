#!/usr/bin/env bash
# System programs the tests drive for real. Installed with apt-get where we can; otherwise stop
# with a clear message rather than letting tests skip.
set -euo pipefail
need=()
for prog in mosquitto socat; do
  command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || need+=("$prog")
done
# setarch (util-linux) runs MicroPython without address-space randomization, so heap figures and
# heap tests replay exactly (tests/conftest.py).
command -v setarch >/dev/null 2>&1 || need+=(util-linux)
# PostgreSQL's server (initdb, pg_ctl) for the cloud tests: Debian keeps it off PATH, under
# /usr/lib/postgresql/<version>/bin (tests/cloud/pgserver.py looks there first).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
# Chromium and its WebDriver for the store console's tests in a real browser (tests/web).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# A 32-bit C compiler and openssl for tools/tls_peak (mbedTLS's own heap use, issue 10): the
# driver would install gcc-multilib on demand too, but a test run should not stop half-way for it.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ! echo 'int main(void){return 0;}' | cc -m32 -x c -o /dev/null - >/dev/null 2>&1; then
  need+=(gcc-multilib)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "error: please install ${need[*]} (no apt-get on this machine)" >&2
  exit 1
fi
