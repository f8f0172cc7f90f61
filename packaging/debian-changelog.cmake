# cmake -DPACKAGE=name -DCHANGELOG=CHANGELOG.md -DOUT=changelog -P debian-changelog.cmake
# Writes PACKAGE's Debian-format changelog: an entry per released version of
# CHANGELOG.md ("## [X.Y.Z] - YYYY-MM-DD"), newest first, pointing at the full
# text, which the package ships as CHANGELOG.md.gz.
file(STRINGS "${CHANGELOG}" headers REGEX "^## \\[[0-9]+\\.[0-9]+\\.[0-9]+\\] - [0-9-]+$")
set(text "")
foreach(header ${headers})
  string(REGEX REPLACE "^## \\[([^]]+)\\] - (.*)$" "\\1" version "${header}")
  string(REGEX REPLACE "^## \\[([^]]+)\\] - (.*)$" "\\2" day "${header}")
  execute_process(COMMAND date -R -u -d "${day}" OUTPUT_VARIABLE when OUTPUT_STRIP_TRAILING_WHITESPACE)
  string(APPEND text "${PACKAGE} (${version}) unstable; urgency=medium\n\n"
         "  * Release ${version}: see CHANGELOG.md.gz beside this file.\n\n"
         " -- courier developers <courier@courier.invalid>  ${when}\n\n")
endforeach()
string(STRIP "${text}" text)
file(WRITE "${OUT}" "${text}\n")
