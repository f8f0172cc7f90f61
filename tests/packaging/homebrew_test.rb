#!/usr/bin/env ruby
# Runs packaging/homebrew/courier.rb's install, as Homebrew would, against
# PostgreSQL 17 and 18: each a keg laid out as Homebrew's postgresql@NN is
# (include/postgresql@NN/server, lib/postgresql@NN, share/postgresql@NN, a
# pg_config answering with them) holding the real headers of that major
# (scripts/pg-majors). A stand-in provides the little of Homebrew's Formula
# DSL the formula uses. Checks that each major's build read its own headers
# and installed where Homebrew's PostgreSQL looks.
#   homebrew_test.rb SOURCE_DIR PG_CACHE WORK_DIR
require "fileutils"
require "pathname"
require "open3"

SOURCE, PG_CACHE, WORK = ARGV.map { |a| Pathname(a).expand_path }
$failures = 0

def check(what, ok)
  puts "#{ok ? "ok  " : "FAIL"} homebrew: #{what}"
  $failures += 1 unless ok
end

# A postgresql@NN keg with the real headers of NN and Homebrew's layout.
class Keg
  attr_reader :name, :opt_bin, :version

  def initialize(major)
    @name = "postgresql@#{major}"
    @version = major
    prefix = WORK/"opt"/@name
    server = prefix/"include"/@name/"server"
    FileUtils.mkdir_p([prefix/"bin", prefix/"lib"/@name, prefix/"share"/@name, server.dirname])
    FileUtils.rm_rf(server)
    FileUtils.cp_r(PG_CACHE/major.to_s/"include/server", server)
    @opt_bin = prefix/"bin"
    (@opt_bin/"pg_config").write(<<~SH)
      #!/bin/sh
      case "$1" in
        --includedir-server) echo #{server} ;;
        --pkglibdir) echo #{prefix}/lib/#{@name} ;;
        --sharedir) echo #{prefix}/share/#{@name} ;;
        --bindir) echo #{@opt_bin} ;;
        --version) echo "PostgreSQL #{major}" ;;
      esac
    SH
    (@opt_bin/"pg_config").chmod(0o755)
  end

  def to_formula = self
end

# The Formula DSL, as far as courier.rb uses it.
class Formula
  Dep = Struct.new(:spec) do
    def to_formula = spec.start_with?("postgresql@") ? Keg.new(spec.split("@").last.to_i) : Struct.new(:name).new(spec)
  end

  class << self
    %i[desc homepage url sha256 license test].each { |m| define_method(m) { |*| } }
    def depends_on(spec) = (@deps ||= []) << (spec.is_a?(Hash) ? spec.keys.first : spec)
    attr_reader :deps
  end

  def deps = self.class.deps.map { |s| Dep.new(s) }
  def prefix = WORK/"Cellar/courier/0"
  def lib = prefix/"lib"
  def share = prefix/"share"
  def include = prefix/"include"
  def bin = prefix/"bin"
  # What matters here of Homebrew's: the prefix, a release build, no tests.
  def std_cmake_args = ["-DCMAKE_INSTALL_PREFIX=#{prefix}", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF", "-GNinja"]

  def system(*args)
    out, status = Open3.capture2e(*args.map(&:to_s))
    File.write(WORK/"build.log", out, mode: "a")
    abort("homebrew: failed: #{args.join(" ")}\n#{out.lines.last(20).join}") unless status.success?
  end
end

# As on a Mac without Go or Rust: their runtimes are left out (and the build is quicker).
ENV["PATH"] = ENV["PATH"].split(":").reject { |d| File.exist?("#{d}/go") || File.exist?("#{d}/cargo") }.join(":")
# Homebrew builds in an unpacked tarball: a copy of the tree, not the checkout.
src = WORK/"src"
FileUtils.rm_rf([src, WORK/"Cellar", WORK/"build.log"])
FileUtils.mkdir_p(src)
system("tar -C #{SOURCE} --exclude=./.git --exclude=./.pg --exclude='./build*' -cf - . | tar -C #{src} -xf -") or abort
load SOURCE/"packaging/homebrew/courier.rb.in"
Dir.chdir(src) { Courier.new.install }

log = File.read(WORK/"build.log")
cellar = WORK/"Cellar/courier/0"
[17, 18].each do |major|
  keg = "postgresql@#{major}"
  check("#{keg}: built against its own headers", log.include?("PostgreSQL #{major} server headers: #{WORK}/opt/#{keg}/include/#{keg}/server"))
  check("#{keg}: courier.so in lib/#{keg}", (cellar/"lib"/keg/"courier.so").file?)
  check("#{keg}: control and SQL in share/#{keg}/extension", (cellar/"share"/keg/"extension/courier.control").file? &&
        Dir[cellar/"share"/keg/"extension/courier--*.sql"].size >= 3)
  check("#{keg}: headers in include/#{keg}/server/courier", (cellar/"include"/keg/"server/courier/runtime.h").file?)
end
check("the tools once, in bin", (cellar/"bin/courier-config").file? && (cellar/"bin/courier_exporter").file?)
exit($failures.zero? ? 0 : 1)
