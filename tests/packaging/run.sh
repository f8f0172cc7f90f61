#!/usr/bin/env bash
# Packages as a user meets them (root; changes the machine, so scripts/test runs
# it last): build the debs and rpms with CPack, lintian, dpkg -c / rpm -qpl /
# rpm -qpR, install the debs with apt, configure a pg_createcluster cluster with
# the installed courier-config, call courier.echo, build another extension
# against the installed headers, scrape the installed exporter, then purge and
# show nothing of courier is left and the cluster starts without it.
# Also: ruby -c on the Homebrew formula and its version against CMake's.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@" >/tmp/courier-pkg-check.log 2>&1; then ok "$what"; else bad "$what"; tail -5 /tmp/courier-pkg-check.log; fi; }

version=$(sed -n 's/^project(courier VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
major=$(pg_config --version | grep -o '[0-9]*' | head -1)

# A machine as a user has it: no courier files but the packages' (scripts/install-ext
# puts the development build, and the benchmark extension, in the same directories).
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "postgresql-$major-courier" courier-tools >/dev/null 2>&1 || true
rm -f /usr/lib/postgresql/$major/lib/courier*.so /usr/share/postgresql/$major/extension/courier*
rm -rf /usr/include/postgresql/$major/server/courier

# --- build -------------------------------------------------------------------
rm -rf build-pkg build-rpm
cmake -S . -B build-pkg -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && ninja -C build-pkg >/dev/null
(cd build-pkg && cpack -G DEB >/dev/null) || bad "cpack deb"
cmake -S . -B build-rpm -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOURIER_PG_LIBDIR=/usr/pgsql-$major/lib \
  -DCOURIER_PG_SHAREDIR=/usr/pgsql-$major/share -DCOURIER_PG_INCLUDEDIR=/usr/pgsql-$major/include/server \
  -DCOURIER_SYSTEMD_DIR=/usr/lib/systemd/system >/dev/null && ninja -C build-rpm >/dev/null
(cd build-rpm && cpack -G RPM >/dev/null) || bad "cpack rpm"
ext_deb=$(ls build-pkg/postgresql-$major-courier_"$version"_*.deb) tools_deb=$(ls build-pkg/courier-tools_"$version"_*.deb)
ext_rpm=$(ls build-rpm/courier_$major-"$version"*.rpm) tools_rpm=$(ls build-rpm/courier-tools-"$version"*.rpm)

# --- inspect -----------------------------------------------------------------
check "lintian reports no errors" sh -c "! lintian $ext_deb $tools_deb | grep '^E:'"
check "deb: extension in Debian's paths" sh -c "dpkg -c $ext_deb | grep -q ' ./usr/lib/postgresql/$major/lib/courier.so' &&
  dpkg -c $ext_deb | grep -q ' ./usr/share/postgresql/$major/extension/courier.control' &&
  dpkg -c $ext_deb | grep -q ' ./usr/include/postgresql/$major/server/courier/courier.h'"
check "deb: depends on postgresql-$major and its shared libraries" sh -c "dpkg -I $ext_deb | grep -q 'Depends: postgresql-$major, .*libstdc++6'"
check "deb: tools, unit, dashboards, rules" sh -c "dpkg -c $tools_deb | grep -q ' ./usr/bin/courier-config' &&
  dpkg -c $tools_deb | grep -q ' ./usr/bin/courier_exporter' && dpkg -c $tools_deb | grep -q 'courier_exporter.service' &&
  dpkg -c $tools_deb | grep -q ' ./usr/share/courier/dashboards/courier-overview.json' &&
  dpkg -c $tools_deb | grep -q ' ./usr/share/courier/rules/courier.rules.yml'"
check "rpm: PGDG paths" sh -c "rpm -qpl $ext_rpm | grep -qx /usr/pgsql-$major/lib/courier.so &&
  rpm -qpl $ext_rpm | grep -qx /usr/pgsql-$major/share/extension/courier.control"
check "rpm: requires postgresql$major-server" sh -c "rpm -qpR $ext_rpm | grep -q postgresql$major-server"
check "rpm: tools" sh -c "rpm -qpl $tools_rpm | grep -qx /usr/bin/courier_exporter"
check "one version: CMake, packages, formula, CHANGELOG" sh -c "dpkg -I $ext_deb | grep -q 'Version: $version' &&
  grep -q 'courier-$version.tar.gz' packaging/homebrew/courier.rb && grep -q 'postgresql@17' packaging/homebrew/courier.rb &&
  grep -qE '^## \\[(Unreleased|$version)\\]' CHANGELOG.md"
check "formula installs where CMake's variables say, like pgvector's" sh -c "
  for v in COURIER_PG_LIBDIR COURIER_PG_SHAREDIR COURIER_PG_INCLUDEDIR PG_CONFIG; do
    grep -q \"\$v\" CMakeLists.txt && grep -q \"\$v=\" packaging/homebrew/courier.rb || exit 1; done
  grep -q 'COURIER_PG_LIBDIR=#{lib}/#{postgresql.name}' packaging/homebrew/courier.rb &&
  grep -q 'COURIER_PG_SHAREDIR=#{share}/#{postgresql.name}' packaging/homebrew/courier.rb"
check "formula: ruby -c" ruby -c packaging/homebrew/courier.rb
check "no -march=native" sh -c "! grep -rn 'march=native' CMakeLists.txt */CMakeLists.txt build-pkg/CMakeCache.txt"

# --- install and use ---------------------------------------------------------
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$ext_deb" "./$tools_deb" >/tmp/courier-pkg-apt.log 2>&1 \
  && ok "apt-get install ./debs" || { bad "apt-get install ./debs"; tail -20 /tmp/courier-pkg-apt.log; }
grep -q "courier-config install" /tmp/courier-pkg-apt.log && ok "postinst prints the courier-config command" || bad "postinst message"
check "no package edited postgresql.conf" sh -c "! grep -rl courier /etc/postgresql/*/main/postgresql.conf"
port=$((20000 + RANDOM % 30000)); cluster=couriertest$$
pg_createcluster "$major" "$cluster" -p "$port" >/dev/null 2>&1 || bad "pg_createcluster"
check "installed courier-config install" /usr/bin/courier-config install /usr/share/courier/examples/small.yaml --cluster "$major/$cluster" --yes
check "cluster starts with courier" pg_ctlcluster "$major" "$cluster" start
psql_() { runuser -u postgres -- psql -p "$port" -X -qAt "$@"; }
check "CREATE EXTENSION and courier.echo" sh -c "$(declare -f psql_); port=$port; psql_ -c 'CREATE EXTENSION courier' &&
  test \"\$(psql_ -c \"SELECT convert_from(courier.echo('packaged'), 'UTF8')\")\" = packaged"
check "another extension builds against the installed headers" make -s -C tests/packaging/hello_courier PG_CONFIG=pg_config
check "and calls courier through the C API" sh -c "$(declare -f psql_); port=$port;
  cp tests/packaging/hello_courier/hello_courier.so /usr/lib/postgresql/$major/lib/ &&
  psql_ -c \"CREATE FUNCTION hello_courier() RETURNS text AS 'hello_courier' LANGUAGE C\" &&
  test \"\$(psql_ -c 'SELECT hello_courier()')\" = 'hello from another extension'"
rm -f /usr/lib/postgresql/$major/lib/hello_courier.so; make -s -C tests/packaging/hello_courier clean >/dev/null 2>&1
eport=$((20000 + RANDOM % 30000))
runuser -u postgres -- /usr/bin/courier_exporter --courier.port="$port" --web.listen-address="127.0.0.1:$eport" 2>/dev/null &
exporter=$!
sleep 1
check "installed exporter serves courier_up 1" sh -c "curl -sf 127.0.0.1:$eport/metrics | grep -qx 'courier_up 1'"
kill $exporter 2>/dev/null; wait $exporter 2>/dev/null
pg_ctlcluster "$major" "$cluster" stop

# --- remove ------------------------------------------------------------------
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "postgresql-$major-courier" courier-tools >/dev/null 2>&1 \
  && ok "apt-get purge" || bad "apt-get purge"
left=$(ls -d /usr/lib/postgresql/$major/lib/courier* /usr/share/postgresql/$major/extension/courier* \
  /usr/include/postgresql/$major/server/courier /usr/bin/courier-config /usr/bin/courier_exporter /usr/share/courier \
  /lib/systemd/system/courier_exporter.service /usr/share/doc/postgresql-$major-courier /usr/share/doc/courier-tools 2>/dev/null)
[ -z "$left" ] && ok "nothing of courier is left on disk" || bad "left on disk: $left"
rm -f "/etc/postgresql/$major/$cluster/conf.d/50-courier.conf"
check "the cluster starts without courier once the snippet is gone" pg_ctlcluster "$major" "$cluster" start
pg_dropcluster "$major" "$cluster" --stop >/dev/null 2>&1

echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
