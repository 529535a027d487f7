# Included by the root CMakeLists.txt when scikit-build-core builds the Python wheel
# (python/pyproject.toml): the shared library and the CLI go inside the package, where
# weightsum/_lib.py and weightsum/__main__.py look for them first. The real file is installed
# under its plain name (wheels cannot hold the versioned symlinks of a system install).
# pyproject.toml builds the target python_wheel only (not the C tests and fuzz targets); a
# target name, since with Ninja "weightsum" would name the CLI's output file.
add_custom_target(python_wheel)
add_dependencies(python_wheel weightsum weightsum_cli)
install(FILES $<TARGET_FILE:weightsum> DESTINATION weightsum RENAME libweightsum.so
        COMPONENT python)
install(PROGRAMS $<TARGET_FILE:weightsum_cli> DESTINATION weightsum/bin COMPONENT python)
# The CUDA backend (cuda/), when this build has one: loaded by the library on first use of a
# device buffer, from beside libweightsum.so.
if(TARGET weightsum_cuda)
  add_dependencies(python_wheel weightsum_cuda)
  install(FILES $<TARGET_FILE:weightsum_cuda> DESTINATION weightsum RENAME libweightsum_cuda.so
          COMPONENT python)
endif()
