# Homebrew formula for courier, built from the release tarball with CMake for
# every PostgreSQL it depends on (as Homebrew's pgvector does): the extension
# of postgresql@NN goes to lib/postgresql@NN and share/postgresql@NN of this
# keg, the tools once. tests/packaging/homebrew_test.rb compiles it against
# the 17 and 18 headers laid out as Homebrew's kegs lay them out.
class Courier < Formula
  desc "Call a multi-threaded runtime in a PostgreSQL background worker over shared memory"
  homepage "https://courier.invalid"
  url "https://courier.invalid/releases/courier-0.2.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "PostgreSQL"

  depends_on "cmake" => :build
  depends_on "boost"
  depends_on "postgresql@17"
  depends_on "postgresql@18"
  depends_on "prometheus-cpp"
  depends_on "yaml-cpp"

  def postgresqls
    deps.map(&:to_formula).select { |f| f.name.start_with?("postgresql@") }.sort_by(&:version)
  end

  def install
    postgresqls.each_with_index do |postgresql, i|
      build = "build-#{postgresql.name}"
      system "cmake", "-S", ".", "-B", build,
             "-DPG_CONFIG=#{postgresql.opt_bin}/pg_config",
             "-DCOURIER_PG_LIBDIR=#{lib}/#{postgresql.name}",
             "-DCOURIER_PG_SHAREDIR=#{share}/#{postgresql.name}",
             "-DCOURIER_PG_INCLUDEDIR=#{include}/#{postgresql.name}/server",
             *std_cmake_args
      system "cmake", "--build", build
      system "cmake", "--install", build, "--component", "extension"
      system "cmake", "--install", build, "--component", "tools" if i.zero?
    end
  end

  def caveats
    <<~EOS
      courier must be preloaded. Size and enable it for a cluster with:
        courier-config generate #{opt_share}/courier/examples/small.yaml --pgdata #{var}/postgresql@18
      append the output to #{var}/postgresql@18/postgresql.conf, restart the server, then:
        CREATE EXTENSION courier;
    EOS
  end

  test do
    ENV["LC_ALL"] = "C"
    postgresqls.each do |postgresql|
      pg_ctl = postgresql.opt_bin/"pg_ctl"
      psql = postgresql.opt_bin/"psql"
      port = free_port
      datadir = testpath/postgresql.name
      system pg_ctl, "initdb", "-D", datadir
      (datadir/"postgresql.conf").write <<~EOS, mode: "a+"
        shared_preload_libraries = 'courier'
        port = #{port}
      EOS
      system pg_ctl, "start", "-D", datadir, "-l", testpath/"log-#{postgresql.name}", "-w"
      begin
        system psql, "-p", port.to_s, "-c", "CREATE EXTENSION courier;", "postgres"
        assert_match "hello", shell_output("#{psql} -p #{port} -Atc \"SELECT convert_from(courier.echo('hello'), 'UTF8')\" postgres")
      ensure
        system pg_ctl, "stop", "-D", datadir
      end
    end
  end
end
