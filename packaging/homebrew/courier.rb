# Homebrew formula for courier, built from the release tarball with CMake
# against postgresql@17 (installed the way Homebrew's pgvector is: into
# lib/postgresql@17 and share/postgresql@17 of this keg).
class Courier < Formula
  desc "Call a multi-threaded runtime in a PostgreSQL background worker over shared memory"
  homepage "https://courier.invalid"
  url "https://courier.invalid/releases/courier-0.2.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "PostgreSQL"

  depends_on "cmake" => :build
  depends_on "googletest" => :build
  depends_on "boost"
  depends_on "postgresql@17"
  depends_on "prometheus-cpp"
  depends_on "yaml-cpp"

  def postgresql
    Formula["postgresql@17"]
  end

  def install
    pg_config = postgresql.opt_bin/"pg_config"
    system "cmake", "-S", ".", "-B", "build",
           "-DPG_CONFIG=#{pg_config}",
           "-DCOURIER_PG_LIBDIR=#{lib}/#{postgresql.name}",
           "-DCOURIER_PG_SHAREDIR=#{share}/#{postgresql.name}",
           "-DCOURIER_PG_INCLUDEDIR=#{include}/#{postgresql.name}/server",
           *std_cmake_args
    system "cmake", "--build", "build"
    system "cmake", "--install", "build", "--component", "extension"
    system "cmake", "--install", "build", "--component", "tools"
  end

  def caveats
    <<~EOS
      courier must be preloaded. Size and enable it for your cluster with:
        courier-config generate #{opt_share}/courier/examples/small.yaml --pgdata #{var}/#{postgresql.name}
      append the output to #{var}/#{postgresql.name}/postgresql.conf, restart the server, then:
        CREATE EXTENSION courier;
    EOS
  end

  test do
    ENV["LC_ALL"] = "C"
    pg_ctl = postgresql.opt_bin/"pg_ctl"
    psql = postgresql.opt_bin/"psql"
    port = free_port
    system pg_ctl, "initdb", "-D", testpath/"test"
    (testpath/"test/postgresql.conf").write <<~EOS, mode: "a+"
      shared_preload_libraries = 'courier'
      port = #{port}
    EOS
    system pg_ctl, "start", "-D", testpath/"test", "-l", testpath/"log", "-w"
    begin
      system psql, "-p", port.to_s, "-c", "CREATE EXTENSION courier;", "postgres"
      assert_match "hello", shell_output("#{psql} -p #{port} -Atc \"SELECT convert_from(courier.echo('hello'), 'UTF8')\" postgres")
    ensure
      system pg_ctl, "stop", "-D", testpath/"test"
    end
  end
end
