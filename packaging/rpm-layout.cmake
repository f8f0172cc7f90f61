# CPack pre-build script: for the rpm generator, move what the build installs
# in Debian's layout into the PostgreSQL community repository's (PGDG:
# /usr/pgsql-NN/...) and systemd's /usr/lib, in the staging directory, so one
# configure makes both the debs and the rpms. Nothing to do for other generators.
if(NOT CPACK_GENERATOR STREQUAL "RPM")
  return()
endif()
set(major "@PG_MAJOR@")
file(GLOB staged LIST_DIRECTORIES true "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*")
foreach(root ${CPACK_TEMPORARY_INSTALL_DIRECTORY} ${staged})
  foreach(move "usr/lib/postgresql/${major}/lib:usr/pgsql-${major}/lib"
               "usr/share/postgresql/${major}:usr/pgsql-${major}/share"
               "usr/include/postgresql/${major}/server:usr/pgsql-${major}/include/server"
               "lib/systemd/system:usr/lib/systemd/system")
    string(REPLACE ":" ";" move "${move}")
    list(GET move 0 from)
    list(GET move 1 to)
    if(IS_DIRECTORY "${root}/${from}")
      get_filename_component(parent "${root}/${to}" DIRECTORY)
      file(MAKE_DIRECTORY "${parent}")
      file(RENAME "${root}/${from}" "${root}/${to}")
    endif()
  endforeach()
  foreach(empty usr/lib/postgresql usr/share/postgresql usr/include/postgresql lib)
    file(REMOVE_RECURSE "${root}/${empty}")
  endforeach()
endforeach()
