# fastopt.jax: XLA FFI handlers compiled into fastopt._core.
#
# FASTOPT_JAX = AUTO | ON | OFF (environment variable FASTOPT_JAX through pyproject.toml's
# cmake.define; default AUTO). The handlers need only the typed FFI headers that jaxlib ships
# (<jaxlib>/include/xla/ffi/api/*.h, header-only; nothing of jax is linked). AUTO builds them when the
# building Python has jaxlib, ON fails without it, OFF skips them. pip's isolated build environment has
# jaxlib only when FASTOPT_JAX=ON, where pyproject.toml's override adds it to the build requirements;
# `pip install --no-build-isolation .` builds them with AUTO wherever jax is installed.
set(FASTOPT_JAX "AUTO" CACHE STRING "Build fastopt.jax's XLA FFI handlers: AUTO, ON or OFF")
set_property(CACHE FASTOPT_JAX PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${FASTOPT_JAX}" FASTOPT_JAX)
if(NOT FASTOPT_JAX MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "FASTOPT_JAX must be AUTO, ON or OFF, not '${FASTOPT_JAX}'")
endif()

# Adds the handlers (or the stub that binds nothing) to the Python module `target`.
function(fastopt_add_jax_handlers target)
  set(_stub "${PROJECT_SOURCE_DIR}/csrc/jax/no_jax.cpp")
  if(FASTOPT_JAX STREQUAL "OFF")
    target_sources(${target} PRIVATE "${_stub}")
    return()
  endif()
  # jaxlib's include folder and version, found without importing jaxlib (nothing of it runs here).
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import importlib.util as u, importlib.metadata as m, os; s = u.find_spec('jaxlib'); \
print(os.path.join(list(s.submodule_search_locations)[0], 'include') + ';' + m.version('jaxlib'))"
    OUTPUT_VARIABLE _found OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _failed)
  list(LENGTH _found _parts)
  if(NOT _failed AND _parts EQUAL 2)
    list(GET _found 0 _include)
    list(GET _found 1 _version)
  endif()
  if(NOT _include OR NOT EXISTS "${_include}/xla/ffi/api/ffi.h")
    if(FASTOPT_JAX STREQUAL "ON")
      message(FATAL_ERROR "FASTOPT_JAX=ON but ${Python_EXECUTABLE} has no jaxlib with the XLA FFI headers "
                          "(pip install jax, or let pip's isolated build fetch it: FASTOPT_JAX=ON pip install .)")
    endif()
    message(STATUS "fastopt: no jaxlib for ${Python_EXECUTABLE}: fastopt.jax's FFI handlers are not built")
    target_sources(${target} PRIVATE "${_stub}")
    return()
  endif()
  # The three headers, copied to a path that does not change between isolated build environments, so
  # that the compiler cache hits (cmake/CompilerCache.cmake says why).
  set(_staged "${CMAKE_BINARY_DIR}/jax-ffi-include")
  file(COPY "${_include}/xla/ffi/api/" DESTINATION "${_staged}/xla/ffi/api" FILES_MATCHING PATTERN "*.h")
  target_sources(${target} PRIVATE
    "${PROJECT_SOURCE_DIR}/csrc/jax/jax_bindings.cpp"
    "${PROJECT_SOURCE_DIR}/csrc/jax/optim_handlers.cpp"
    "${PROJECT_SOURCE_DIR}/csrc/jax/rule_handlers.cpp"
    "${PROJECT_SOURCE_DIR}/csrc/jax/adafactor_handlers.cpp"
    "${PROJECT_SOURCE_DIR}/csrc/jax/loss_handlers.cpp")
  target_include_directories(${target} SYSTEM PRIVATE "${_staged}")
  target_compile_definitions(${target} PRIVATE FASTOPT_WITH_JAX FASTOPT_JAXLIB_VERSION="${_version}")
  message(STATUS "fastopt: fastopt.jax's FFI handlers, with the headers of jaxlib ${_version}")
endfunction()
