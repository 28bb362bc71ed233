#!/bin/sh
# Puts Apache Kafka's broker jars (tests/kafka/pom.xml) into one classpath folder for the
# tests that start a real broker (tests/apache_kafka.py) and prints that folder. Maven
# downloads them once: a stamp holding the pom's sha256 marks a complete folder.
# KAFKA_LIBS overrides the folder, by default ~/.cache/edge-gateway/kafka-<version>/libs.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
pom="$root/tests/kafka/pom.xml"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
libs=${KAFKA_LIBS:-$HOME/.cache/edge-gateway/kafka-$version/libs}
stamp="$libs/.complete"
want=$(sha256sum "$pom" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$libs"
    exit 0
fi
command -v mvn >/dev/null 2>&1 || {
    echo "kafka-jars: mvn is missing (Debian: apt-get install maven openjdk-17-jre-headless)" >&2
    exit 1
}
# Into a folder of its own first, so that an interrupted download never looks complete.
mkdir -p "$(dirname "$libs")"
partial=$(mktemp -d "$libs.partial.XXXXXX")
trap 'rm -rf "$partial"' EXIT
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$partial" >&2
echo "$want" >"$partial/.complete"
rm -rf "$libs"
mv "$partial" "$libs"
echo "$libs"
