#!/bin/sh
# Installs the Debian packages the tests and benchmarks run for real (load generator,
# reference servers). Root installs what is missing; anyone else is told what to install.
set -eu
packages="wrk nginx-light libnginx-mod-http-echo caddy pebble chromium chromium-driver nghttp2-client redis-server varnish knot openjdk-17-jre-headless maven"
missing=""
for pkg in $packages; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "missing Debian packages:$missing (install them with: sudo apt-get install$missing)" >&2
    exit 1
fi
