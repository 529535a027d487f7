/* Internal: finds and loads the device backend (libweightsum_cuda.so) once, on first use. */
#ifndef WS_DEVICE_LOADER_H
#define WS_DEVICE_LOADER_H
#include "device_backend.h"
#include "internal.h"

/* File name of the CUDA backend library and the variable that names it explicitly. */
#define WSI_DEVICE_LIB_NAME "libweightsum_cuda.so"
#define WSI_DEVICE_LIB_ENV "WEIGHTSUM_CUDA_LIB"

/*
 * The backend table, loaded once (thread-safe; later calls return the same answer). Looked
 * for at $WEIGHTSUM_CUDA_LIB (a file, or a folder holding libweightsum_cuda.so; when set,
 * nothing else is tried), then beside the library or program this code is linked into, then
 * beside the running program (/proc/self/exe), then on the system's search path.
 * NULL with WS_ERR_NOTFOUND (and the places tried) when none loads or its ABI differs.
 */
WSI_HIDDEN const wsi_device_backend *wsi_device_backend_get(ws_error *err);

#endif
