#!/usr/bin/env bash
# Installs and starts what the test suite uses beyond Python packages, where it is absent:
#   - PostgreSQL (Debian's `postgresql`), listening on 127.0.0.1:5432 with trust auth and a database `test`
#   - Chromium + ChromeDriver (Debian's `chromium`, `chromium-driver`) for the dashboard browser test, and a CJK font
#     (Debian's `fonts-wqy-microhei`) where none is installed, so that it renders Chinese
#   - the Apache Kafka 4.4.0 jars (Maven Central, via deploy/kafka/pom.xml) in .cache/kafka/4.4.0/libs
#   - Apicurio Registry 3.3.3 (Maven Central's io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all, ~160 MB) unpacked
#     in .cache/apicurio/3.3.3: the schema registry of the registry-format tests (it runs on Java 21 or later)
#   - the helm CLI for the chart checks (deploy/helm/install-helm.sh)
# Each step is skipped when its tool is already there, and a step that cannot run (no root, no apt-get, no
# Java or Maven) says so and moves on: the tests that need it then skip with the reason.
#   bash deploy/test-deps.sh
set -uo pipefail
cd "$(dirname "$0")/.."
say() { echo "test-deps: $*"; }
failed=
fail() { say "$*"; failed=1; }  # a step that should have worked here (the tools are present) but did not
apt_updated=
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "cannot install $* (needs root and apt-get)"; return 1
    fi
    if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null && apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_answers() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 -t 2; }

setup_postgres() {
    if ! pg_answers; then
        if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
            say "installing PostgreSQL"
            apt_install postgresql || return 0
        fi
        if [ "$(id -u)" != 0 ] || ! command -v pg_ctlcluster >/dev/null; then
            say "PostgreSQL is installed but not running, and it cannot be started from here"; return 0
        fi
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main" || pg_createcluster "$version" main >/dev/null
        conf=/etc/postgresql/$version/main
        mkdir -p "$conf/conf.d"
        # a test server: loopback only, the standard port; durability traded for speed (fsync off)
        printf "listen_addresses = '127.0.0.1'\nport = 5432\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" \
            > "$conf/conf.d/streamsense-tests.conf"
        grep -q "streamsense-tests" "$conf/pg_hba.conf" || {
            printf "# streamsense-tests: trust on loopback\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n" \
                | cat - "$conf/pg_hba.conf" > "$conf/pg_hba.conf.new" && mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
            chown postgres:postgres "$conf/pg_hba.conf"
        }
        pg_ctlcluster "$version" main start || { fail "PostgreSQL did not start"; return 0; }
        for _ in $(seq 1 30); do pg_answers && break; sleep 0.5; done
    fi
    if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname = 'test'" postgres 2>/dev/null | grep -q 1; then
        psql -h 127.0.0.1 -U postgres -qc "create database test" postgres >/dev/null 2>&1 \
            || say "could not create database test (is trust auth on for 127.0.0.1?)"
    fi
    pg_answers && say "PostgreSQL answers on 127.0.0.1:5432"
}

setup_chromium() {
    command -v chromedriver >/dev/null && return 0
    say "installing Chromium and ChromeDriver"
    apt_install chromium chromium-driver fonts-dejavu-core || say "chromium not installed: the dashboard browser test will skip"
}

setup_cjk_font() {
    # Chinese text in the dashboard's browser test (and on a fresh desktop) renders as empty boxes without a CJK
    # font: WenQuanYi Micro Hei is the smallest Debian one (1.6 MB download, 5 MB installed; fonts-wqy-zenhei is
    # 7.5 / 16 MB, fonts-noto-cjk 57 / 89 MB)
    command -v fc-list >/dev/null && [ -n "$(fc-list :lang=zh 2>/dev/null)" ] && return 0
    say "installing a CJK font (fonts-wqy-microhei)"
    apt_install fonts-wqy-microhei || say "no CJK font: the dashboard browser test's Chinese check will fail"
}

setup_kafka_jars() {
    libs=.cache/kafka/4.4.0/libs
    [ -f "$libs/kafka_2.13-4.4.0.jar" ] && return 0
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        say "no java/mvn: the Apache Kafka test variants will skip"; return 0
    fi
    say "fetching the Apache Kafka 4.4.0 jars (Maven Central, ~45 MB)"
    rm -rf "$libs.partial"
    mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
        "-DoutputDirectory=$PWD/$libs.partial" && mv "$libs.partial" "$libs" \
        || fail "Maven could not fetch the Kafka jars: the Apache Kafka test variants will skip"
}

setup_apicurio() {
    version=3.3.3
    dir=.cache/apicurio/$version
    [ -f "$dir/quarkus-run.jar" ] && return 0
    if ! command -v mvn >/dev/null; then
        say "no mvn: the schema registry tests will skip"; return 0
    fi
    say "fetching Apicurio Registry $version (Maven Central, ~160 MB)"
    # -Dtransitive=false: the bundle is self-contained (its pom's dependencies are the ones inside it)
    mvn -q -B dependency:get -Dtransitive=false "-Dartifact=io.apicurio:apicurio-registry-app:$version:tar.gz:all" \
        || { fail "Maven could not fetch Apicurio Registry: the schema registry tests will skip"; return 0; }
    repo=${MAVEN_LOCAL_REPO:-$HOME/.m2/repository}  # Maven's default local repository (set this where it is moved)
    bundle="$repo/io/apicurio/apicurio-registry-app/$version/apicurio-registry-app-$version-all.tar.gz"
    rm -rf "$dir.partial" && mkdir -p "$dir.partial" && tar -xzf "$bundle" -C "$dir.partial" && mv "$dir.partial" "$dir" \
        || fail "could not unpack $bundle: the schema registry tests will skip"
}

setup_helm() {
    if command -v helm >/dev/null || [ -x "$HOME/.local/bin/helm" ]; then return 0; fi
    bash deploy/helm/install-helm.sh >/dev/null || say "helm not installed: the chart checks will skip"
}

setup_postgres
setup_chromium
setup_cjk_font
setup_kafka_jars
setup_apicurio
setup_helm
# In CI a step that should have worked but failed stops the run: otherwise its tests would skip and CI look green.
if [ -n "$failed" ] && [ "${CI:-}" = true ]; then say "a setup step failed (above): stopping (CI=true)"; exit 1; fi
exit 0
