# cmake -DTARBALL=... -DIN=courier.rb.in -DOUT=courier.rb -DCOURIER_RELEASE_URL=... -DPROJECT_VERSION=... -P render.cmake
# Writes the Homebrew formula for a release tarball: its url and its sha256.
file(SHA256 "${TARBALL}" TARBALL_SHA256)
configure_file("${IN}" "${OUT}" @ONLY)
