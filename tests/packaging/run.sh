#!/usr/bin/env bash
# Packages as an operator meets them, day one and day two. Root only, and it
# changes the machine, so scripts/test runs it last — and not at all where
# courier's packages are already installed (exit 3: it would remove them).
#
#   build     debs and rpms of this tree for 15, 17 and 18 (one configure each:
#             the rpms get the PGDG layout), and 0.1.0's debs from history;
#             lintian prints nothing; contents, dependencies, versions
#   day one   install 0.1.0, courier-config install, start, CREATE EXTENSION, a call
#   upgrade   install this tree's: the restart is asked for once; restart;
#             ALTER EXTENSION courier UPDATE; the API and counters; another
#             extension against the installed headers; the installed exporter
#   remove    the snippet disabled and the exporter's unit links gone; the
#             cluster restarts without courier; purge leaves nothing
#   homebrew  the formula compiled against 17 and 18 (homebrew_test.rb)
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@" >/tmp/courier-pkg-check.log 2>&1; then ok "$what"; else bad "$what"; tail -5 /tmp/courier-pkg-check.log; fi; }

version=$(sed -n 's/^project(courier VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
old_version=0.1.0 old_commit=599ccc0   # the commit 0.1.0's packages were built from
installed=$(dpkg-query -W -f='${Package} ${Status}\n' 'postgresql-*-courier' courier-tools 2>/dev/null | grep "install ok installed")
if [ -n "$installed" ]; then
  echo "packaging: skipped: courier's packages are installed here ($(echo "$installed" | cut -d' ' -f1 | xargs));"
  echo "  this test installs and purges its own and would remove them. Remove them first to run it."
  exit 3
fi
export CARGO_TARGET_DIR=$root/build-cargo   # one tokio build for every build directory
# What scripts/install-ext put in the server's directories belongs to no package: a user's machine has none of it.
rm -f /usr/lib/postgresql/15/lib/courier*.so /usr/share/postgresql/15/extension/courier*
rm -rf /usr/include/postgresql/15/server/courier

# --- build ---------------------------------------------------------------------
scripts/pg-majors fetch
build_packages() {  # build_packages DIR [cmake args...]: debs and rpms of this tree
  local dir=$1; shift
  rm -rf "$dir" && cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF "$@" >/dev/null \
    && ninja -C "$dir" >/dev/null && (cd "$dir" && cpack -G "DEB;RPM" >/dev/null)
}
for_major() {  # for_major NN: Debian's paths, the headers of scripts/pg-majors
  build_packages "build-pkg-$1" -DPG_INCLUDEDIR_SERVER="$root/.pg/$1/include/server" \
    -DPG_PKGLIBDIR="/usr/lib/postgresql/$1/lib" -DPG_SHAREDIR="/usr/share/postgresql/$1" \
    -DPG_BINDIR="/usr/lib/postgresql/$1/bin" -DCOURIER_PG_INCLUDEDIR="/usr/include/postgresql/$1/server"
}
build_packages build-pkg || bad "build and cpack for 15"
for_major 17 & b17=$!; for_major 18 & b18=$!
wait $b17 || bad "build and cpack for 17"; wait $b18 || bad "build and cpack for 18"
rm -rf build-pkg-old && mkdir -p build-pkg-old/src && git archive "$old_commit" | tar -x -C build-pkg-old/src
(cmake -S build-pkg-old/src -B build-pkg-old/build -G Ninja >/dev/null && ninja -C build-pkg-old/build >/dev/null \
  && cd build-pkg-old/build && cpack -G DEB >/dev/null) || bad "build $old_version's packages from $old_commit"

deb() { ls build-pkg${2:+-$2}/"$1"_"$version"_*.deb; }
rpm_of() { ls build-pkg${2:+-$2}/"$1"-"$version"*.rpm; }
tools_deb=$(deb courier-tools)
check "lintian prints nothing for the debs of 15, 17 and 18" sh -c "test -z \"\$(lintian $(deb postgresql-15-courier) $tools_deb \
  $(deb postgresql-17-courier 17) $(deb postgresql-18-courier 18) 2>&1 | grep -v 'running with root privileges')\""
for major in 15 17 18; do
  suffix=$([ $major = 15 ] || echo $major)
  ext_deb=$(deb "postgresql-$major-courier" "$suffix") ext_rpm=$(rpm_of "courier_$major" "$suffix")
  check "deb $major: extension in Debian's paths, depends on postgresql-$major" sh -c "
    dpkg -c $ext_deb | grep -q ' ./usr/lib/postgresql/$major/lib/courier.so' &&
    dpkg -c $ext_deb | grep -q ' ./usr/share/postgresql/$major/extension/courier--0.1.0--$version.sql' &&
    dpkg -c $ext_deb | grep -q ' ./usr/include/postgresql/$major/server/courier/runtime.h' &&
    dpkg -I $ext_deb | grep -q 'Depends: postgresql-$major, .*libstdc++6'"
  check "rpm $major: PGDG paths from the same configure, requires postgresql$major-server" sh -c "
    rpm -qpl $ext_rpm | grep -qx /usr/pgsql-$major/lib/courier.so &&
    rpm -qpl $ext_rpm | grep -qx /usr/pgsql-$major/share/extension/courier.control &&
    rpm -qpl $ext_rpm | grep -qx /usr/pgsql-$major/include/server/courier/courier.h &&
    ! rpm -qpl $ext_rpm | grep -q /usr/lib/postgresql && rpm -qpR $ext_rpm | grep -q postgresql$major-server"
done
check "deb: tools, manuals, unit, dashboards, rules" sh -c "dpkg -c $tools_deb | grep -q ' ./usr/bin/courier-config' &&
  dpkg -c $tools_deb | grep -q ' ./usr/share/man/man1/courier_exporter.1.gz' &&
  dpkg -c $tools_deb | grep -q ' ./usr/share/man/man1/courier-config.1.gz' &&
  dpkg -c $tools_deb | grep -q 'courier_exporter.service' &&
  dpkg -c $tools_deb | grep -q ' ./usr/share/courier/rules/courier.rules.yml'"
check "rpm: tools with the unit in /usr/lib/systemd" sh -c "rpm -qpl $(rpm_of courier-tools) | grep -qx /usr/bin/courier_exporter &&
  rpm -qpl $(rpm_of courier-tools) | grep -qx /usr/lib/systemd/system/courier_exporter.service"
rpm -qp --queryformat '%{POSTIN}' "$(rpm_of courier_15)" > /tmp/courier-rpm-post.sh
check "rpm: its post-install message gives the PGDG data directory, no Debian cluster" sh -c "
  sh /tmp/courier-rpm-post.sh 1 > /tmp/courier-rpm-post.out && grep -q -- '--conf-dir /var/lib/pgsql/15/data' /tmp/courier-rpm-post.out &&
  ! grep -q -- '--cluster' /tmp/courier-rpm-post.out"
ninja -C build-pkg courier_formula >/dev/null || bad "the release tarball and its Homebrew formula"
formula_names_tarball() {
  local formula=build-pkg/packaging/courier.rb tarball=build-pkg/packaging/courier-$version.tar.gz
  grep -qF "url \"file://$root/$tarball\"" "$formula" &&
    grep -qF "sha256 \"$(sha256sum "$tarball" | cut -d' ' -f1)\"" "$formula" && ruby -c "$formula"
}
check "the formula names the release tarball and its real checksum" formula_names_tarball
check "one version: CMake, packages, CHANGELOG" sh -c "dpkg -I $tools_deb | grep -q 'Version: $version' &&
  grep -qE '^## \\[$version\\] - ' CHANGELOG.md &&
  zcat /dev/stdin < build-pkg/packaging/courier-tools/changelog.gz | head -1 | grep -q '($version)'"
check "no -march=native" sh -c "! grep -rn 'march=native' CMakeLists.txt */CMakeLists.txt build-pkg/CMakeCache.txt"

# --- day one: 0.1.0 ------------------------------------------------------------
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@" >/tmp/courier-pkg-apt.log 2>&1; }
apt_get install ./build-pkg-old/build/postgresql-15-courier_${old_version}_*.deb ./build-pkg-old/build/courier-tools_${old_version}_*.deb \
  && ok "day one: apt-get install $old_version" || { bad "apt-get install $old_version"; tail -20 /tmp/courier-pkg-apt.log; }
port=$((20000 + RANDOM % 30000)); cluster=couriertest$$
pg_createcluster 15 "$cluster" -p "$port" >/dev/null 2>&1 || bad "pg_createcluster"
conf=/etc/postgresql/15/$cluster
check "courier-config install (the installed one)" courier-config install /usr/share/courier/examples/small.yaml --cluster "15/$cluster" --yes
check "postgresql.conf keeps its owner and mode" sh -c "stat -c '%U %a' $conf/postgresql.conf | grep -qx 'postgres 644'"
check "the cluster starts with courier" pg_ctlcluster 15 "$cluster" start
psql_() { runuser -u postgres -- psql -p "$port" -X -qAt "$@"; }
check "CREATE EXTENSION courier ($old_version) and a call" sh -c "$(declare -f psql_); port=$port;
  psql_ -c 'CREATE EXTENSION courier' && test \"\$(psql_ -c \"SELECT convert_from(courier.echo('day one'), 'UTF8')\")\" = 'day one' &&
  test \"\$(psql_ -c \"SELECT extversion FROM pg_extension WHERE extname = 'courier'\")\" = $old_version"

# --- day two: upgrade ----------------------------------------------------------
apt_get install "./$(deb postgresql-15-courier)" "./$tools_deb" && ok "upgrade: apt-get install $version" \
  || { bad "upgrade: apt-get install $version"; tail -20 /tmp/courier-pkg-apt.log; }
check "upgrade: the restart is asked for once" sh -c "test \"\$(grep -c 'was upgraded from $old_version' /tmp/courier-pkg-apt.log)\" = 1 &&
  grep -q 'ALTER EXTENSION courier UPDATE' /tmp/courier-pkg-apt.log"
check "upgrade: the cluster restarts with the new courier.so" pg_ctlcluster 15 "$cluster" restart
check "ALTER EXTENSION courier UPDATE; the API and its counters" sh -c "$(declare -f psql_); port=$port;
  psql_ -c 'ALTER EXTENSION courier UPDATE' &&
  test \"\$(psql_ -c \"SELECT extversion FROM pg_extension WHERE extname = 'courier'\")\" = $version &&
  test \"\$(psql_ -c \"SELECT convert_from(courier.echo('day two'), 'UTF8')\")\" = 'day two' &&
  test \"\$(psql_ -c \"SELECT value FROM courier.stats() WHERE name = 'runtime.courier_echo.calls'\")\" -ge 1"
check "scripts/install-ext refuses to overwrite the installed package" sh -c "! scripts/install-ext 2>/tmp/courier-install-ext.err &&
  grep -q 'belongs to the package postgresql-15-courier' /tmp/courier-install-ext.err && dpkg -V postgresql-15-courier"
check "another extension builds against the installed headers" make -s -C tests/packaging/hello_courier PG_CONFIG=pg_config
check "and calls courier through the C API" sh -c "$(declare -f psql_); port=$port;
  cp tests/packaging/hello_courier/hello_courier.so /usr/lib/postgresql/15/lib/ &&
  psql_ -c \"CREATE FUNCTION hello_courier() RETURNS text AS 'hello_courier' LANGUAGE C\" &&
  test \"\$(psql_ -c 'SELECT hello_courier()')\" = 'hello from another extension'"
rm -f /usr/lib/postgresql/15/lib/hello_courier.so; make -s -C tests/packaging/hello_courier clean >/dev/null 2>&1
eport=$((20000 + RANDOM % 30000))
runuser -u postgres -- /usr/bin/courier_exporter --courier.port="$port" --web.listen-address="127.0.0.1:$eport" 2>/dev/null &
exporter=$!
check "the installed exporter serves courier_up 1" sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do
  curl -sf 127.0.0.1:$eport/metrics | grep -qx 'courier_up 1' && exit 0; sleep 0.5; done; exit 1"
kill $exporter 2>/dev/null; wait $exporter 2>/dev/null
check "the man pages open" sh -c "man -P cat courier-config 2>/dev/null | grep -q 'courier-config' || zcat /usr/share/man/man1/courier-config.1.gz | grep -q 'install'"
systemctl enable courier_exporter.service >/dev/null 2>&1 || ln -sf /lib/systemd/system/courier_exporter.service \
  /etc/systemd/system/multi-user.target.wants/courier_exporter.service

# --- day two: remove, purge ----------------------------------------------------
apt_get remove postgresql-15-courier courier-tools && ok "apt-get remove" || bad "apt-get remove"
check "remove: the snippet is disabled, and it says so" sh -c "test -f $conf/conf.d/50-courier.conf.disabled &&
  ! test -e $conf/conf.d/50-courier.conf && grep -q 'courier: disabled $conf/conf.d/50-courier.conf' /tmp/courier-pkg-apt.log"
check "remove: no link to the exporter's unit is left" sh -c "! ls /etc/systemd/system/*.wants/courier_exporter.service 2>/dev/null"
check "remove: the cluster restarts without courier" pg_ctlcluster 15 "$cluster" restart
apt_get purge postgresql-15-courier courier-tools && ok "apt-get purge" || bad "apt-get purge"
left=$(ls -d /usr/lib/postgresql/15/lib/courier* /usr/share/postgresql/15/extension/courier* \
  /usr/include/postgresql/15/server/courier /usr/bin/courier-config /usr/bin/courier_exporter /usr/share/courier \
  /lib/systemd/system/courier_exporter.service /usr/share/doc/postgresql-15-courier /usr/share/doc/courier-tools \
  "$conf"/conf.d/50-courier.conf* /usr/share/man/man1/courier* 2>/dev/null)
[ -z "$left" ] && ok "purge: nothing of courier is left" || bad "left after purge: $left"
check "purge: the cluster still restarts" pg_ctlcluster 15 "$cluster" restart
pg_dropcluster 15 "$cluster" --stop >/dev/null 2>&1

# --- homebrew --------------------------------------------------------------------
if ruby tests/packaging/homebrew_test.rb . .pg build-homebrew >/tmp/courier-homebrew.log 2>&1; then
  ok "homebrew: the formula builds for postgresql@17 and @18 in Homebrew's layout"
else
  bad "homebrew: the formula"; tail -20 /tmp/courier-homebrew.log
fi
grep -E "^(ok|FAIL)" /tmp/courier-homebrew.log

echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
